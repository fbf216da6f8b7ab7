"""The queue's wire contract: every Redis key and stream name, the job status enum, metric names.

Producer (API) and consumer (worker) both import this module, so a key name exists in one place.
All keys live under a deployment prefix (`Settings.redis_key_prefix`, default "nowcast").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class JobStatus(StrEnum):
    """Job states, named as in OGC API - Processes."""

    ACCEPTED = "accepted"
    RUNNING = "running"
    SUCCESSFUL = "successful"
    FAILED = "failed"
    DISMISSED = "dismissed"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.SUCCESSFUL, JobStatus.FAILED, JobStatus.DISMISSED})

# consumer group shared by all workers of one deployment
CONSUMER_GROUP = "workers"
# field of a stream entry that names the job
STREAM_JOB_FIELD = "job_id"


@dataclass(frozen=True)
class RedisKeys:
    """Key and stream names under one prefix.

    Layout (`p` = prefix):
    - `p:jobs` stream of job ids, consumer group `workers`
    - `p:dead` dead-letter stream (job id + reason)
    - `p:job:<id>` hash: the job record (`service.queue.jobs.serialize_job`)
    - (not in Redis) the input and result files: `service.blobstore`, keys `p/inputs/<id>` and
      `p/results/<id>`; `job_input` / `job_result` below name no key any more
    - `p:active` set of ids accepted or running (the queue-length limit counts it)
    - `p:tenant:<tenant>:jobs` sorted set id -> created time [ms] (listing, newest first)
    - `p:idem:<len(tenant)>:<tenant>:<key>` Idempotency-Key -> JSON {job_id, fingerprint}
    - `p:heartbeats` sorted set worker id -> last heartbeat [ms]
    - `p:ready-probe` short-lived key that /readyz writes (Redis takes writes)
    - `p:metrics:counter:<name>` hash label -> count; `p:metrics:hist:<name>` hash bucket -> count
    """

    prefix: str = "nowcast"

    @property
    def stream(self) -> str:
        return f"{self.prefix}:jobs"

    @property
    def dead_letter_stream(self) -> str:
        return f"{self.prefix}:dead"

    @property
    def active_set(self) -> str:
        return f"{self.prefix}:active"

    @property
    def heartbeats(self) -> str:
        return f"{self.prefix}:heartbeats"

    @property
    def readiness_probe(self) -> str:
        # written by /readyz: PING alone answers while Redis refuses writes
        return f"{self.prefix}:ready-probe"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def job_input(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:input"

    def job_result(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:result"

    def tenant_jobs(self, tenant: str) -> str:
        return f"{self.prefix}:tenant:{tenant}:jobs"

    def idempotency(self, tenant: str, key: str) -> str:
        # the tenant's length in front makes the split unambiguous: joined by ':' alone, tenant
        # "acme" with key "x:k1" and tenant "acme:x" with key "k1" shared one key
        return f"{self.prefix}:idem:{len(tenant)}:{tenant}:{key}"

    def counter(self, name: str) -> str:
        return f"{self.prefix}:metrics:counter:{name}"

    def histogram(self, name: str) -> str:
        return f"{self.prefix}:metrics:hist:{name}"


# the `error_detail` of a dead-lettered job; both stores (Python and Lua) fill in {n}
DEAD_LETTER_REASON = (
    "the job was delivered {n} times and no worker finished it (workers crashed, were killed or "
    "ran out of memory); it was moved to the dead-letter queue. Resubmit it, and report the job "
    "id if it happens again"
)

# metric names shared by the worker (writes them into the store) and /metrics (reads them)
COUNTER_JOBS = "jobs"  # label = outcome: submitted, successful, failed, dismissed, dead_lettered
HIST_QUEUE_WAIT_S = "queue_wait_s"
HIST_RUN_S = "run_s"
HIST_BATCH_SIZE = "batch_size"
HISTOGRAM_BUCKETS: dict[str, tuple[float, ...]] = {
    HIST_QUEUE_WAIT_S: (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
    HIST_RUN_S: (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
    HIST_BATCH_SIZE: (1, 2, 3, 4, 6, 8, 12, 16, 32),
}


def bucket_label(name: str, value: float) -> str:
    """The upper bound (as text) of the first bucket of histogram `name` that holds `value`."""
    for bound in HISTOGRAM_BUCKETS[name]:
        if value <= bound:
            return repr(float(bound))
    return "+Inf"
