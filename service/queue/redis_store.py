"""`JobStore` on Redis: a stream + consumer group for the queue, a hash per job, blobs with TTLs.

Every state transition is one Lua script, so it is atomic with respect to the other transitions
(a cancel cannot interleave with a finish, two finishers cannot both win). Acknowledging a stream
entry (XACK + XDEL) happens in the same script that stores the terminal state and the result.
Lease = the idle time of a pending stream entry: the owner renews it with XCLAIM ... JUSTID (only
while it still owns the entry), other workers take entries idle longer than `lease_s` with
XAUTOCLAIM.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterator

import redis

from service.blobstore import BlobStore, open_blob_store
from service.queue.constants import (
    CONSUMER_GROUP,
    COUNTER_JOBS,
    DEAD_LETTER_REASON,
    HISTOGRAM_BUCKETS,
    STREAM_JOB_FIELD,
    JobStatus,
    RedisKeys,
    bucket_label,
)
from service.queue.jobs import Job, deserialize_job, now_ms, serialize_job
from service.queue.store import (
    Delivery,
    HistogramSnapshot,
    Idempotency,
    IdempotencyConflictError,
    JobStore,
    MetricsSnapshot,
    QueueFullError,
    QueuePolicy,
    StartResult,
    StoreFullError,
    StoreUnavailableError,
    SubmitResult,
    TenantQuotaError,
)
from service.settings import Settings

logger = logging.getLogger(__name__)

_TERMINAL_LUA = "status == 'successful' or status == 'failed' or status == 'dismissed'"

# KEYS: idem, active, job, (unused), tenant_jobs, stream, counter
# ARGV: use_idem, idem_value, idem_ttl_s, max_queue, job_id, created_ms, (unused), (unused),
#       job_ttl_s, prune_before_ms, tenant_limit, job key prefix, tenant, hash fields...
# (the input is in the blob store, written before this script runs)
# The tenant's active jobs are counted over the active set (at most max_queue ids), and only
# once the whole queue holds tenant_limit jobs: no per-tenant counter to keep in step.
_SUBMIT = """
if ARGV[1] == '1' then
  local existing = redis.call('GET', KEYS[1])
  if existing then return {'existing', existing} end
end
local active = redis.call('SCARD', KEYS[2])
if active >= tonumber(ARGV[4]) then return {'full', ''} end
local tenant_limit = tonumber(ARGV[11])
if active >= tenant_limit then
  local held = 0
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    if redis.call('HGET', ARGV[12] .. id, 'tenant') == ARGV[13] then held = held + 1 end
  end
  if held >= tenant_limit then return {'tenant_full', ''} end
end
if ARGV[1] == '1' then redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) end
local fields = {}
for i = 14, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[3], unpack(fields))
local msg = redis.call('XADD', KEYS[6], '*', 'job_id', ARGV[5])
redis.call('HSET', KEYS[3], 'message_id', msg)
redis.call('EXPIRE', KEYS[3], ARGV[9])
redis.call('SADD', KEYS[2], ARGV[5])
redis.call('ZADD', KEYS[5], ARGV[6], ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', ARGV[10])
redis.call('EXPIRE', KEYS[5], ARGV[9])
redis.call('HINCRBY', KEYS[7], 'submitted', 1)
return {'created', msg}
"""

# the reason text is spliced into the Lua source as two single-quoted literals
_REASON_HEAD, _REASON_TAIL = DEAD_LETTER_REASON.split("{n}")
if "'" in DEAD_LETTER_REASON or "\\" in DEAD_LETTER_REASON:
    raise ValueError("DEAD_LETTER_REASON must not hold quotes or backslashes (spliced into Lua)")

# KEYS: job, active, stream, dead, counter
# ARGV: msg_id, group, consumer, now_ms, max_deliveries, job_id, job_ttl_s
_START = f"""
local function settle()
  redis.call('XACK', KEYS[3], ARGV[2], ARGV[1])
  redis.call('XDEL', KEYS[3], ARGV[1])
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[6])
  settle()
  return {{'skip'}}
end
local status = redis.call('HGET', KEYS[1], 'status')
if {_TERMINAL_LUA} then
  settle()
  return {{'skip'}}
end
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then
  redis.call('HSET', KEYS[1], 'status', 'dismissed', 'finished_ms', ARGV[4], 'updated_ms', ARGV[4])
  redis.call('SREM', KEYS[2], ARGV[6])
  redis.call('HINCRBY', KEYS[5], 'dismissed', 1)
  settle()
  return {{'dismissed'}}
end
local done = tonumber(redis.call('HGET', KEYS[1], 'deliveries') or '0')
if done >= tonumber(ARGV[5]) then
  local reason = '{_REASON_HEAD}' .. done .. '{_REASON_TAIL}'
  redis.call('HSET', KEYS[1], 'status', 'failed', 'error_code', 'dead-lettered',
    'error_detail', reason, 'finished_ms', ARGV[4], 'updated_ms', ARGV[4])
  redis.call('XADD', KEYS[4], '*', 'job_id', ARGV[6], 'reason', reason, 'deliveries', done)
  redis.call('SREM', KEYS[2], ARGV[6])
  redis.call('HINCRBY', KEYS[5], 'dead_lettered', 1)
  settle()
  return {{'dead_lettered'}}
end
redis.call('HINCRBY', KEYS[1], 'deliveries', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[3], 'started_ms', ARGV[4],
  'updated_ms', ARGV[4], 'message_id', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[7])
return {{'run', redis.call('HGETALL', KEYS[1])}}
"""

# KEYS: job, active, stream, counter, (unused)
# ARGV: msg_id, group, new_status, now_ms, error_code, error_detail, result_ttl_s, job_ttl_s,
#       job_id (the result is in the blob store, written before this script runs)
_FINISH = f"""
redis.call('XACK', KEYS[3], ARGV[2], ARGV[1])
redis.call('XDEL', KEYS[3], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[9])
  return {{'gone'}}
end
local status = redis.call('HGET', KEYS[1], 'status')
if {_TERMINAL_LUA} then
  return {{'unchanged', redis.call('HGETALL', KEYS[1])}}
end
-- a DELETE answered `cancel_requested` after the worker's last cancel check: the job ends
-- dismissed, its result unstored (in this script, so cancel and finish cannot interleave)
local new_status = ARGV[3]
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then new_status = 'dismissed' end
if new_status == 'successful' then
  local expires = tonumber(ARGV[4]) + 1000 * tonumber(ARGV[7])
  local total = redis.call('HGET', KEYS[1], 'progress_total') or '0'
  redis.call('HSET', KEYS[1], 'result_expires_ms', string.format('%d', expires),
    'progress_step', total)
elseif new_status == 'failed' then
  redis.call('HSET', KEYS[1], 'error_code', ARGV[5], 'error_detail', ARGV[6])
end
redis.call('HSET', KEYS[1], 'status', new_status, 'finished_ms', ARGV[4], 'updated_ms', ARGV[4])
redis.call('SREM', KEYS[2], ARGV[9])
redis.call('HINCRBY', KEYS[4], new_status, 1)
redis.call('EXPIRE', KEYS[1], ARGV[8])
return {{'changed', redis.call('HGETALL', KEYS[1])}}
"""

# KEYS: job, active, stream, counter, (unused)
# ARGV: group, now_ms, job_id (the caller deletes the blobs of a job this dismisses)
_CANCEL = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'accepted' then
  local msg = redis.call('HGET', KEYS[1], 'message_id')
  if msg and msg ~= '' then
    redis.call('XACK', KEYS[3], ARGV[1], msg)
    redis.call('XDEL', KEYS[3], msg)
  end
  redis.call('HSET', KEYS[1], 'status', 'dismissed', 'cancel_requested', '1',
    'finished_ms', ARGV[2], 'updated_ms', ARGV[2])
  redis.call('SREM', KEYS[2], ARGV[3])
  redis.call('HINCRBY', KEYS[4], 'dismissed', 1)
elseif status == 'running' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1', 'updated_ms', ARGV[2])
elseif status == 'successful' then
  redis.call('HSET', KEYS[1], 'status', 'dismissed', 'result_expires_ms', '',
    'updated_ms', ARGV[2])
end
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: job, active, stream, counter
# ARGV: msg_id, group, now_ms, job_id
_RELEASE = f"""
redis.call('XACK', KEYS[3], ARGV[2], ARGV[1])
redis.call('XDEL', KEYS[3], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[4])
  return 'gone'
end
local status = redis.call('HGET', KEYS[1], 'status')
if {_TERMINAL_LUA} then return 'unchanged' end
-- a stale delivery (the job was queued again since) must not add a second entry
if redis.call('HGET', KEYS[1], 'message_id') ~= ARGV[1] then return 'unchanged' end
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then
  redis.call('HSET', KEYS[1], 'status', 'dismissed', 'finished_ms', ARGV[3], 'updated_ms', ARGV[3])
  redis.call('SREM', KEYS[2], ARGV[4])
  redis.call('HINCRBY', KEYS[4], 'dismissed', 1)
  return 'dismissed'
end
-- 'accepted': claimed but never started (a worker stopping between claim and start); its entry
-- was just deleted, so it must be queued again like a running one, or it would never run
if status == 'running' then redis.call('HINCRBY', KEYS[1], 'deliveries', -1) end
local msg = redis.call('XADD', KEYS[3], '*', 'job_id', ARGV[4])
redis.call('HSET', KEYS[1], 'status', 'accepted', 'worker', '', 'message_id', msg,
  'progress_step', '0', 'updated_ms', ARGV[3])
return 'released'
"""

# KEYS: job; ARGV: step, total, now_ms
_PROGRESS = """
if redis.call('HGET', KEYS[1], 'status') == 'running' then
  redis.call('HSET', KEYS[1], 'progress_step', ARGV[1], 'progress_total', ARGV[2],
    'updated_ms', ARGV[3])
end
return 1
"""

# KEYS: stream; ARGV: group, consumer, msg ids...
# XCLAIM alone would also take an entry that another consumer reclaimed after this one's lease ran
# out (two workers on one job); so renew only the entries still pending for this consumer, and
# return the others so that the caller stops working on them
_RENEW = """
local lost = {}
for i = 3, #ARGV do
  local owned = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #owned == 1 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
"""

# KEYS: stream, heartbeats; ARGV: group, max_idle_ms, heartbeat_since_ms
# one script, so that a consumer cannot be given an entry between the check and the removal
# (XGROUP DELCONSUMER would drop that entry from the pending list)
_PRUNE_CONSUMERS = """
local removed = {}
for _, info in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local fields = {}
  for i = 1, #info, 2 do fields[info[i]] = info[i + 1] end
  local beat = redis.call('ZSCORE', KEYS[2], fields['name'])
  local beating = beat and tonumber(beat) >= tonumber(ARGV[3])
  if fields['pending'] == 0 and fields['idle'] > tonumber(ARGV[2]) and not beating then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], fields['name'])
    removed[#removed + 1] = fields['name']
  end
end
return removed
"""

# blob key folders under the prefix
_INPUTS = "inputs"
_RESULTS = "results"

_HEARTBEAT_RETENTION_MS = 24 * 3600 * 1000
# XAUTOCLAIM pages one `claim` may follow (each scans up to 10 x count pending entries)
_RECLAIM_MAX_PAGES = 100
_CURSOR_START = "0-0"


def _pairs_to_dict(flat: list[bytes]) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _is_out_of_memory(exc: redis.ResponseError) -> bool:
    """Redis refused a write at `maxmemory` (redis-py's `OutOfMemoryError`, or the same text
    wrapped in a script's error)."""
    return isinstance(exc, redis.exceptions.OutOfMemoryError) or "> 'maxmemory'" in str(exc)


def _outage_is_unavailable(cls: type[JobStore]) -> type[JobStore]:
    """Make every `JobStore` method raise `StoreUnavailableError` while Redis cannot be reached,
    so that callers (the API answers 503, not 500) need not know about redis-py."""

    def translating(method):  # noqa: ANN001, ANN202 - keeps the method's own signature
        @functools.wraps(method)
        def call(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            try:
                return method(*args, **kwargs)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                raise StoreUnavailableError(str(exc)) from exc
            except redis.ResponseError as exc:
                if _is_out_of_memory(exc):
                    raise StoreFullError(str(exc)) from exc
                raise

        return call

    for name in JobStore.__abstractmethods__:
        setattr(cls, name, translating(getattr(cls, name)))
    return cls


@_outage_is_unavailable
class RedisJobStore(JobStore):
    """The production `JobStore`: state in Redis, shared by any number of API and worker processes.

    Parameters
    ----------
    client : redis.Redis
        Connection with `decode_responses=False` (blobs are bytes).
    prefix : str
        Prefix of every key, so several deployments (or tests) can share one Redis.
    policy : QueuePolicy
        TTLs, lease, delivery and queue limits.
    blobs : BlobStore, optional
        Where inputs and results go (default: `Settings.blob_url`'s default, a local folder);
        their keys start with `prefix`, so deployments sharing a store never meet.
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        policy: QueuePolicy,
        blobs: BlobStore | None = None,
    ) -> None:
        self.client = client
        self.keys = RedisKeys(prefix)
        self.policy = policy
        self.blobs = blobs or open_blob_store(Settings.model_fields["blob_url"].default)
        self._submit = client.register_script(_SUBMIT)
        self._start = client.register_script(_START)
        self._finish = client.register_script(_FINISH)
        self._cancel = client.register_script(_CANCEL)
        self._release = client.register_script(_RELEASE)
        self._progress = client.register_script(_PROGRESS)
        self._renew = client.register_script(_RENEW)
        self._prune_consumers = client.register_script(_PRUNE_CONSUMERS)
        self._group_ready = False
        # where the next XAUTOCLAIM scan of the pending list resumes
        self._reclaim_cursor = _CURSOR_START

    @classmethod
    def from_url(
        cls, url: str, prefix: str, policy: QueuePolicy, blob_url: str | None = None
    ) -> RedisJobStore:
        client = redis.Redis.from_url(url, decode_responses=False, health_check_interval=30)
        return cls(client, prefix, policy, open_blob_store(blob_url) if blob_url else None)

    def _input_blob(self, job_id: str) -> str:
        return f"{self.keys.prefix}/{_INPUTS}/{job_id}"

    def _result_blob(self, job_id: str) -> str:
        return f"{self.keys.prefix}/{_RESULTS}/{job_id}"

    def _drop_blobs(self, job_id: str) -> None:
        self.blobs.delete(self._input_blob(job_id))
        self.blobs.delete(self._result_blob(job_id))

    # ------------------------------------------------------------------ helpers
    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self.client.xgroup_create(self.keys.stream, CONSUMER_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def _job_keys(self, job_id: str) -> list[str]:
        return [
            self.keys.job(job_id),
            self.keys.active_set,
            self.keys.stream,
            self.keys.counter(COUNTER_JOBS),
            self.keys.job_result(job_id),
        ]

    # ------------------------------------------------------------------ producer side
    def submit(
        self, job: Job, input_bytes: bytes, idempotency: Idempotency | None = None
    ) -> SubmitResult:
        self._ensure_group()
        idem_key = self.keys.idempotency(job.tenant, idempotency.key) if idempotency else ""
        idem_value = (
            json.dumps({"job_id": job.id, "fingerprint": idempotency.fingerprint})
            if idempotency
            else ""
        )
        fields = [item for pair in serialize_job(job).items() for item in pair]
        prune_before_ms = job.created_ms - self.policy.job_ttl_s * 1000
        # the input first: a worker may claim the job the moment the script has queued it
        self.blobs.put(self._input_blob(job.id), input_bytes)
        try:
            reply = self._submit_script(job, idem_key, idem_value, prune_before_ms, fields)
        except BaseException:
            self.blobs.delete(self._input_blob(job.id))
            raise
        outcome = reply[0].decode()
        if outcome != "created":  # refused or replayed: this job id was never queued
            self.blobs.delete(self._input_blob(job.id))
        if outcome == "full":
            raise QueueFullError
        if outcome == "tenant_full":
            raise TenantQuotaError
        if outcome == "existing":
            assert idempotency is not None
            earlier = json.loads(reply[1])
            if earlier["fingerprint"] != idempotency.fingerprint:
                raise IdempotencyConflictError
            existing = self.get(earlier["job_id"])
            if existing is None:  # the earlier job expired: the key is free again
                self.client.delete(idem_key)
                return self.submit(job, input_bytes, idempotency)
            return SubmitResult(existing, created=False)
        return SubmitResult(job.replace(message_id=reply[1].decode()), created=True)

    def _submit_script(
        self,
        job: Job,
        idem_key: str,
        idem_value: str,
        prune_before_ms: int,
        fields: list[str],
    ) -> list[bytes]:
        return self._submit(
            keys=[
                idem_key or self.keys.idempotency(job.tenant, "-"),
                self.keys.active_set,
                self.keys.job(job.id),
                self.keys.job_input(job.id),  # unused (the blob store holds the input)
                self.keys.tenant_jobs(job.tenant),
                self.keys.stream,
                self.keys.counter(COUNTER_JOBS),
            ],
            args=[
                "1" if idem_key else "0",
                idem_value,
                self.policy.idempotency_ttl_s,
                self.policy.max_queue_length,
                job.id,
                job.created_ms,
                "",
                self.policy.input_ttl_s,
                self.policy.job_ttl_s,
                prune_before_ms,
                self.policy.tenant_limit,
                self.keys.job(""),
                job.tenant,
                *fields,
            ],
        )

    def get(self, job_id: str) -> Job | None:
        data = self.client.hgetall(self.keys.job(job_id))
        return deserialize_job(data) if data else None

    def get_many(self, job_ids: list[str]) -> dict[str, Job | None]:
        pipe = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(self.keys.job(job_id))
        try:
            replies = pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailableError(str(exc)) from exc
        return {
            job_id: deserialize_job(data) if data else None
            for job_id, data in zip(job_ids, replies, strict=True)
        }

    def list_jobs(self, tenant: str, offset: int, limit: int) -> tuple[list[Job], int]:
        key = self.keys.tenant_jobs(tenant)
        ids = [i.decode() for i in self.client.zrevrange(key, offset, offset + limit - 1)]
        pipe = self.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self.keys.job(job_id))
        jobs, expired = [], []
        for job_id, data in zip(ids, pipe.execute(), strict=True):
            if data:
                jobs.append(deserialize_job(data))
            else:
                expired.append(job_id)
        if expired:
            self.client.zrem(key, *expired)
        return jobs, int(self.client.zcard(key))

    def cancel(self, job_id: str) -> Job | None:
        reply = self._cancel(keys=self._job_keys(job_id), args=[CONSUMER_GROUP, now_ms(), job_id])
        job = deserialize_job(_pairs_to_dict(reply)) if reply else None
        if job is not None and job.status is JobStatus.DISMISSED:
            self._drop_blobs(job_id)
        return job

    def _result_expired(self, job_id: str) -> bool:
        expires = self.client.hget(self.keys.job(job_id), "result_expires_ms")
        return not expires or int(expires) < now_ms()

    def get_result(self, job_id: str) -> bytes | None:
        if self._result_expired(job_id):
            return None
        return self.blobs.get(self._result_blob(job_id))

    def open_result(self, job_id: str) -> Iterator[bytes] | None:
        if self._result_expired(job_id):
            return None
        return self.blobs.open_chunks(self._result_blob(job_id))

    def sweep_blobs(self) -> int:
        prefix = self.keys.prefix
        return self.blobs.sweep(f"{prefix}/{_INPUTS}", self.policy.input_ttl_s) + self.blobs.sweep(
            f"{prefix}/{_RESULTS}", self.policy.result_ttl_s
        )

    def active_count(self) -> int:
        return int(self.client.scard(self.keys.active_set))

    def ping(self) -> None:
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise StoreUnavailableError(str(exc)) from exc

    def check_writable(self) -> None:
        # PING answers while Redis refuses every write at maxmemory: write a tiny key to know
        try:
            self.client.set(self.keys.readiness_probe, now_ms(), px=60_000)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailableError(str(exc)) from exc
        except redis.ResponseError as exc:
            if _is_out_of_memory(exc):
                raise StoreFullError(str(exc)) from exc
            raise

    def live_workers(self, max_age_s: float) -> list[str]:
        since = now_ms() - int(max_age_s * 1000)
        return [w.decode() for w in self.client.zrangebyscore(self.keys.heartbeats, since, "+inf")]

    def metrics_snapshot(self, worker_max_age_s: float) -> MetricsSnapshot:
        self._ensure_group()
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.keys.counter(COUNTER_JOBS))
        for name in HISTOGRAM_BUCKETS:
            pipe.hgetall(self.keys.histogram(name))
        pipe.scard(self.keys.active_set)
        pipe.xpending(self.keys.stream, CONSUMER_GROUP)
        pipe.xlen(self.keys.dead_letter_stream)
        since = now_ms() - int(worker_max_age_s * 1000)
        pipe.zcount(self.keys.heartbeats, since, "+inf")
        replies = pipe.execute()
        counters = {COUNTER_JOBS: {k.decode(): int(v) for k, v in replies[0].items()}}
        histograms = {}
        for name, data in zip(HISTOGRAM_BUCKETS, replies[1:], strict=False):
            text = {k.decode(): v.decode() for k, v in data.items()}
            histograms[name] = HistogramSnapshot(
                buckets={k: int(v) for k, v in text.items() if k not in ("count", "sum")},
                count=int(text.get("count", 0)),
                sum=float(text.get("sum", 0.0)),
            )
        active, pending, dead, live = replies[1 + len(HISTOGRAM_BUCKETS) :]
        return MetricsSnapshot(
            counters=counters,
            histograms=histograms,
            active_jobs=int(active),
            in_flight=int(pending["pending"]),
            dead_letters=int(dead),
            live_workers=int(live),
        )

    # ------------------------------------------------------------------ consumer side
    def claim(self, consumer: str, count: int, block_s: float) -> list[Delivery]:
        self._ensure_group()
        try:
            return self._claim(consumer, count, block_s)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # the stream was deleted under us (e.g. a flushed Redis): recreate and retry later
            self._group_ready = False
            self._reclaim_cursor = _CURSOR_START
            return []

    def _reclaim(self, consumer: str, count: int) -> list[Delivery]:
        """Up to `count` pending entries idle longer than the lease, taken over by `consumer`.

        XAUTOCLAIM scans at most 10 x COUNT pending entries and returns the cursor where it
        stopped, so idle entries behind a run of live ones need the following pages. One call
        follows the cursor until it has `count` entries or has scanned the whole pending list,
        at most `_RECLAIM_MAX_PAGES` pages; the cursor is kept, so that the next call resumes
        where this one stopped (for `count` or the page cap) and no entry is skipped for good.
        """
        lease_ms = int(self.policy.lease_s * 1000)
        deliveries: list[Delivery] = []
        cursor = self._reclaim_cursor
        # a scan begun mid-list goes on from the list's start once it reaches the end, so that
        # the entries before its first cursor are seen too (those after it, twice: harmless)
        ends_left = 1 if cursor == _CURSOR_START else 2
        for _ in range(_RECLAIM_MAX_PAGES):
            next_cursor, reclaimed, *_deleted = self.client.xautoclaim(
                self.keys.stream,
                CONSUMER_GROUP,
                consumer,
                lease_ms,
                start_id=cursor,
                count=count - len(deliveries),
            )
            cursor = next_cursor.decode() if isinstance(next_cursor, bytes) else str(next_cursor)
            for message_id, fields in reclaimed:
                if fields:
                    deliveries.append(_delivery(message_id, fields))
            if len(deliveries) >= count:
                break
            if cursor == _CURSOR_START:
                ends_left -= 1
                if ends_left == 0:
                    break
        self._reclaim_cursor = cursor
        return deliveries

    def _claim(self, consumer: str, count: int, block_s: float) -> list[Delivery]:
        deliveries = self._reclaim(consumer, count)
        if deliveries:
            logger.info(
                "reclaimed %d job(s) from dead consumers: %s",
                len(deliveries),
                ", ".join(d.job_id for d in deliveries),
            )
        missing = count - len(deliveries)
        if missing > 0:
            block_ms = None if deliveries else max(1, int(block_s * 1000))
            reply = self.client.xreadgroup(
                CONSUMER_GROUP, consumer, {self.keys.stream: ">"}, count=missing, block=block_ms
            )
            for _stream, messages in reply or []:
                for message_id, fields in messages:
                    if fields:
                        deliveries.append(_delivery(message_id, fields))
        return deliveries

    def start(self, delivery: Delivery, consumer: str) -> StartResult:
        reply = self._start(
            keys=[
                self.keys.job(delivery.job_id),
                self.keys.active_set,
                self.keys.stream,
                self.keys.dead_letter_stream,
                self.keys.counter(COUNTER_JOBS),
            ],
            args=[
                delivery.message_id,
                CONSUMER_GROUP,
                consumer,
                now_ms(),
                self.policy.max_deliveries,
                delivery.job_id,
                self.policy.job_ttl_s,
            ],
        )
        outcome = reply[0].decode()
        if outcome == "run":
            return StartResult("run", deserialize_job(_pairs_to_dict(reply[1])))
        return StartResult(outcome)

    def renew_leases(self, consumer: str, deliveries: list[Delivery]) -> list[Delivery]:
        if not deliveries:
            return []
        lost = self._renew(
            keys=[self.keys.stream],
            args=[CONSUMER_GROUP, consumer, *(d.message_id for d in deliveries)],
        )
        lost_ids = {message_id.decode() for message_id in lost}
        return [d for d in deliveries if d.message_id in lost_ids]

    def set_progress(self, job_id: str, step: int, total: int) -> None:
        self._progress(keys=[self.keys.job(job_id)], args=[step, total, now_ms()])

    def cancel_requested(self, job_ids: list[str]) -> set[str]:
        pipe = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(self.keys.job(job_id), ["cancel_requested", "status"])
        cancelled = set()
        for job_id, (flag, status) in zip(job_ids, pipe.execute(), strict=True):
            if flag == b"1" or status is None or status == b"dismissed":
                cancelled.add(job_id)
        return cancelled

    def load_input(self, job_id: str) -> bytes | None:
        return self.blobs.get(self._input_blob(job_id))

    def _finish_job(
        self,
        delivery: Delivery,
        status: JobStatus,
        *,
        code: str = "",
        detail: str = "",
        result: bytes | None = None,
    ) -> Job | None:
        # the result first (first writer wins), so that `successful` never names a missing blob
        blob = self._result_blob(delivery.job_id)
        wrote = result is not None and self.blobs.put_new(blob, result)
        reply = self._finish(
            keys=self._job_keys(delivery.job_id),
            args=[
                delivery.message_id,
                CONSUMER_GROUP,
                status.value,
                now_ms(),
                code,
                detail,
                self.policy.result_ttl_s,
                self.policy.job_ttl_s,
                delivery.job_id,
            ],
        )
        if reply[0] == b"gone":
            self._drop_blobs(delivery.job_id)
            return None
        job = deserialize_job(_pairs_to_dict(reply[1]))
        if job.status is not JobStatus.SUCCESSFUL and wrote:
            # dismissed (a cancel came first) or settled otherwise: no result to keep
            self.blobs.delete(self._result_blob(delivery.job_id))
        if job.status in (JobStatus.SUCCESSFUL, JobStatus.DISMISSED):
            # drop the input once the forecast exists; a redelivery finds the job terminal
            self.blobs.delete(self._input_blob(delivery.job_id))
        return job

    def complete(self, delivery: Delivery, result_bytes: bytes) -> Job | None:
        return self._finish_job(delivery, JobStatus.SUCCESSFUL, result=result_bytes)

    def fail(self, delivery: Delivery, code: str, detail: str) -> Job | None:
        return self._finish_job(delivery, JobStatus.FAILED, code=code, detail=detail)

    def dismiss(self, delivery: Delivery) -> Job | None:
        return self._finish_job(delivery, JobStatus.DISMISSED)

    def release(self, delivery: Delivery) -> None:
        self._release(
            keys=[
                self.keys.job(delivery.job_id),
                self.keys.active_set,
                self.keys.stream,
                self.keys.counter(COUNTER_JOBS),
            ],
            args=[delivery.message_id, CONSUMER_GROUP, now_ms(), delivery.job_id],
        )

    def heartbeat(self, consumer: str) -> None:
        now = now_ms()
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(self.keys.heartbeats, {consumer: now})
        pipe.zremrangebyscore(self.keys.heartbeats, "-inf", now - _HEARTBEAT_RETENTION_MS)
        pipe.execute()

    def remove_worker(self, consumer: str) -> None:
        # not XGROUP DELCONSUMER: that would orphan entries still pending for the consumer
        self.client.zrem(self.keys.heartbeats, consumer)

    def prune_consumers(self, max_idle_s: float) -> list[str]:
        self._ensure_group()
        max_idle_ms = int(max_idle_s * 1000)
        removed = self._prune_consumers(
            keys=[self.keys.stream, self.keys.heartbeats],
            args=[CONSUMER_GROUP, max_idle_ms, now_ms() - max_idle_ms],
        )
        return [name.decode() for name in removed]

    def observe(self, name: str, value: float) -> None:
        key = self.keys.histogram(name)
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(key, bucket_label(name, value), 1)
        pipe.hincrby(key, "count", 1)
        pipe.hincrbyfloat(key, "sum", float(value))
        pipe.execute()

    def close(self) -> None:
        self.client.close()

    def delete_all_keys(self) -> int:
        """Delete every key and blob under this store's prefix (tests and `nowcast` admin)."""
        for kind in (_INPUTS, _RESULTS):
            self.blobs.sweep(f"{self.keys.prefix}/{kind}", -1)
        removed = 0
        for key in self.client.scan_iter(match=f"{self.keys.prefix}:*", count=500):
            removed += int(self.client.delete(key))
        return removed


def _delivery(message_id: bytes, fields: dict[bytes, bytes]) -> Delivery:
    return Delivery(
        job_id=fields[STREAM_JOB_FIELD.encode()].decode(),
        message_id=message_id.decode(),
    )
