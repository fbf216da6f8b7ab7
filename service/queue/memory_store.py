"""`JobStore` in process memory: the embedded default when no Redis URL is set.

Same semantics as `RedisJobStore` (leases, redelivery, dead-lettering, first result wins, TTLs)
for one process: the API and its worker threads share one instance. State is lost on restart.
One lock guards everything; a condition variable wakes consumers blocked in `claim`.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict, defaultdict
from dataclasses import dataclass

from service.queue.constants import (
    COUNTER_JOBS,
    DEAD_LETTER_REASON,
    HISTOGRAM_BUCKETS,
    JobStatus,
    bucket_label,
)
from service.queue.jobs import Job, now_ms
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
    SubmitResult,
    TenantQuotaError,
)


@dataclass
class _Blob:
    data: bytes
    expires_at: float  # time.time() [s]


@dataclass
class _Pending:
    job_id: str
    consumer: str
    lease_until: float  # time.monotonic() [s]


class MemoryJobStore(JobStore):
    """Thread-safe in-process `JobStore`."""

    def __init__(self, policy: QueuePolicy | None = None) -> None:
        self.policy = policy or QueuePolicy()
        self._cond = threading.Condition()
        self._jobs: dict[str, Job] = {}
        self._job_expires_at: dict[str, float] = {}
        self._inputs: dict[str, _Blob] = {}
        self._results: dict[str, _Blob] = {}
        self._queue: OrderedDict[str, str] = OrderedDict()  # message id -> job id, not delivered
        self._pending: dict[str, _Pending] = {}  # message id -> owner, delivered, not acked
        self._active: set[str] = set()
        self._tenant_jobs: dict[str, list[str]] = defaultdict(list)
        # (tenant, key) -> (job id, fingerprint, expiry): a pair, never a joined string, so that
        # tenants cannot collide
        self._idempotency: dict[tuple[str, str], tuple[str, str, float]] = {}
        self._heartbeats: dict[str, float] = {}
        self._counters: dict[str, int] = defaultdict(int)
        self._histograms: dict[str, HistogramSnapshot] = {
            name: HistogramSnapshot() for name in HISTOGRAM_BUCKETS
        }
        self._dead_letters: list[tuple[str, str]] = []
        self._message_ids = itertools.count(1)

    # ------------------------------------------------------------------ helpers (lock held)
    def _live_job(self, job_id: str) -> Job | None:
        expires = self._job_expires_at.get(job_id)
        if expires is not None and expires < time.time():
            self._forget(job_id)
        return self._jobs.get(job_id)

    def _forget(self, job_id: str) -> None:
        job = self._jobs.pop(job_id, None)
        self._job_expires_at.pop(job_id, None)
        self._inputs.pop(job_id, None)
        self._results.pop(job_id, None)
        self._active.discard(job_id)
        if job is not None and job_id in self._tenant_jobs.get(job.tenant, []):
            self._tenant_jobs[job.tenant].remove(job_id)

    def _put(self, job: Job) -> Job:
        self._jobs[job.id] = job
        self._job_expires_at[job.id] = time.time() + self.policy.job_ttl_s
        return job

    def _blob(self, blobs: dict[str, _Blob], job_id: str) -> bytes | None:
        blob = blobs.get(job_id)
        if blob is None:
            return None
        if blob.expires_at < time.time():
            del blobs[job_id]
            return None
        return blob.data

    def _enqueue(self, job_id: str) -> str:
        message_id = f"{next(self._message_ids)}-0"
        self._queue[message_id] = job_id
        self._cond.notify_all()
        return message_id

    def _ack(self, message_id: str) -> None:
        self._pending.pop(message_id, None)
        self._queue.pop(message_id, None)

    def _settle(self, job: Job, status: JobStatus, **changes: object) -> Job:
        now = now_ms()
        self._active.discard(job.id)
        self._counters[status.value] += 1
        return self._put(job.replace(status=status, finished_ms=now, updated_ms=now, **changes))

    # ------------------------------------------------------------------ producer side
    def submit(
        self, job: Job, input_bytes: bytes, idempotency: Idempotency | None = None
    ) -> SubmitResult:
        with self._cond:
            if idempotency is not None:
                entry = self._idempotency.get((job.tenant, idempotency.key))
                if entry is not None and entry[2] >= time.time():
                    earlier_id, fingerprint, _ = entry
                    if fingerprint != idempotency.fingerprint:
                        raise IdempotencyConflictError
                    earlier = self._live_job(earlier_id)
                    if earlier is not None:
                        return SubmitResult(earlier, created=False)
            if len(self._active) >= self.policy.max_queue_length:
                raise QueueFullError
            tenants = (self._jobs[i].tenant for i in self._active if i in self._jobs)
            held = sum(1 for tenant in tenants if tenant == job.tenant)
            if held >= self.policy.tenant_limit:
                raise TenantQuotaError
            if idempotency is not None:
                expires = time.time() + self.policy.idempotency_ttl_s
                self._idempotency[(job.tenant, idempotency.key)] = (
                    job.id,
                    idempotency.fingerprint,
                    expires,
                )
            self._inputs[job.id] = _Blob(input_bytes, time.time() + self.policy.input_ttl_s)
            message_id = self._enqueue(job.id)
            job = self._put(job.replace(message_id=message_id))
            self._active.add(job.id)
            self._tenant_jobs[job.tenant].append(job.id)
            self._counters["submitted"] += 1
            return SubmitResult(job, created=True)

    def get(self, job_id: str) -> Job | None:
        with self._cond:
            return self._live_job(job_id)

    def list_jobs(self, tenant: str, offset: int, limit: int) -> tuple[list[Job], int]:
        with self._cond:
            ids = list(self._tenant_jobs.get(tenant, []))
            jobs = [job for job_id in ids if (job := self._live_job(job_id)) is not None]
            jobs.sort(key=lambda j: j.created_ms, reverse=True)
            return jobs[offset : offset + limit], len(jobs)

    def cancel(self, job_id: str) -> Job | None:
        with self._cond:
            job = self._live_job(job_id)
            if job is None:
                return None
            if job.status is JobStatus.ACCEPTED:
                if job.message_id:
                    self._ack(job.message_id)
                return self._settle(job, JobStatus.DISMISSED, cancel_requested=True)
            if job.status is JobStatus.RUNNING:
                return self._put(job.replace(cancel_requested=True, updated_ms=now_ms()))
            if job.status is JobStatus.SUCCESSFUL:
                self._results.pop(job_id, None)
                return self._put(
                    job.replace(
                        status=JobStatus.DISMISSED, result_expires_ms=None, updated_ms=now_ms()
                    )
                )
            return job

    def get_result(self, job_id: str) -> bytes | None:
        with self._cond:
            return self._blob(self._results, job_id)

    def active_count(self) -> int:
        with self._cond:
            return len(self._active)

    def ping(self) -> None:
        return None

    def live_workers(self, max_age_s: float) -> list[str]:
        with self._cond:
            since = time.time() - max_age_s
            return [name for name, t in self._heartbeats.items() if t >= since]

    def metrics_snapshot(self, worker_max_age_s: float) -> MetricsSnapshot:
        live = self.live_worker_count(worker_max_age_s)
        with self._cond:
            return MetricsSnapshot(
                counters={COUNTER_JOBS: dict(self._counters)},
                histograms={
                    name: HistogramSnapshot(dict(h.buckets), h.count, h.sum)
                    for name, h in self._histograms.items()
                },
                active_jobs=len(self._active),
                in_flight=len(self._pending),
                dead_letters=len(self._dead_letters),
                live_workers=live,
            )

    # ------------------------------------------------------------------ consumer side
    def claim(self, consumer: str, count: int, block_s: float) -> list[Delivery]:
        deadline = time.monotonic() + block_s
        with self._cond:
            while True:
                deliveries = self._take(consumer, count)
                remaining = deadline - time.monotonic()
                if deliveries or remaining <= 0:
                    return deliveries
                self._cond.wait(timeout=min(remaining, self.policy.lease_s))

    def _take(self, consumer: str, count: int) -> list[Delivery]:
        now = time.monotonic()
        lease_until = now + self.policy.lease_s
        deliveries = []
        for message_id, pending in self._pending.items():
            if len(deliveries) == count:
                break
            if pending.lease_until < now:  # the owner stopped renewing: hand it over
                pending.consumer, pending.lease_until = consumer, lease_until
                deliveries.append(Delivery(pending.job_id, message_id))
        while self._queue and len(deliveries) < count:
            message_id, job_id = self._queue.popitem(last=False)
            self._pending[message_id] = _Pending(job_id, consumer, lease_until)
            deliveries.append(Delivery(job_id, message_id))
        return deliveries

    def start(self, delivery: Delivery, consumer: str) -> StartResult:
        with self._cond:
            job = self._live_job(delivery.job_id)
            if job is None or job.status.is_terminal:
                self._ack(delivery.message_id)
                self._active.discard(delivery.job_id)
                return StartResult("skip")
            if job.cancel_requested:
                self._ack(delivery.message_id)
                self._settle(job, JobStatus.DISMISSED)
                return StartResult("dismissed")
            if job.deliveries >= self.policy.max_deliveries:
                reason = DEAD_LETTER_REASON.format(n=job.deliveries)
                self._ack(delivery.message_id)
                self._dead_letters.append((job.id, reason))
                self._active.discard(job.id)
                self._counters["dead_lettered"] += 1
                now = now_ms()
                self._put(
                    job.replace(
                        status=JobStatus.FAILED,
                        error_code="dead-lettered",
                        error_detail=reason,
                        finished_ms=now,
                        updated_ms=now,
                    )
                )
                return StartResult("dead_lettered")
            now = now_ms()
            job = self._put(
                job.replace(
                    status=JobStatus.RUNNING,
                    deliveries=job.deliveries + 1,
                    worker=consumer,
                    started_ms=now,
                    updated_ms=now,
                    message_id=delivery.message_id,
                )
            )
            return StartResult("run", job)

    def renew_leases(self, consumer: str, deliveries: list[Delivery]) -> list[Delivery]:
        with self._cond:
            lease_until = time.monotonic() + self.policy.lease_s
            lost = []
            for delivery in deliveries:
                pending = self._pending.get(delivery.message_id)
                if pending is None or pending.consumer != consumer:
                    lost.append(delivery)
                else:
                    pending.lease_until = lease_until
            return lost

    def set_progress(self, job_id: str, step: int, total: int) -> None:
        with self._cond:
            job = self._live_job(job_id)
            if job is not None and job.status is JobStatus.RUNNING:
                progress = {"progress_step": step, "progress_total": total, "updated_ms": now_ms()}
                self._put(job.replace(**progress))

    def cancel_requested(self, job_ids: list[str]) -> set[str]:
        with self._cond:
            cancelled = set()
            for job_id in job_ids:
                job = self._live_job(job_id)
                if job is None or job.cancel_requested or job.status is JobStatus.DISMISSED:
                    cancelled.add(job_id)
            return cancelled

    def load_input(self, job_id: str) -> bytes | None:
        with self._cond:
            return self._blob(self._inputs, job_id)

    def _finish(self, delivery: Delivery, status: JobStatus, **changes: object) -> Job | None:
        self._ack(delivery.message_id)
        job = self._live_job(delivery.job_id)
        if job is None:
            self._active.discard(delivery.job_id)
            return None
        if job.status.is_terminal:
            return job
        if job.cancel_requested:
            # a DELETE answered `cancel_requested` after the worker's last cancel check: the job
            # ends dismissed (under the lock, so cancel and finish cannot interleave)
            return self._settle(job, JobStatus.DISMISSED)
        return self._settle(job, status, **changes)

    def complete(self, delivery: Delivery, result_bytes: bytes) -> Job | None:
        with self._cond:
            job = self._live_job(delivery.job_id)
            if job is None or job.status.is_terminal or job.cancel_requested:
                self._inputs.pop(delivery.job_id, None)
                return self._finish(delivery, JobStatus.SUCCESSFUL)
            expires_at = time.time() + self.policy.result_ttl_s
            self._results.setdefault(job.id, _Blob(result_bytes, expires_at))
            self._inputs.pop(job.id, None)
            return self._finish(
                delivery,
                JobStatus.SUCCESSFUL,
                result_expires_ms=int(expires_at * 1000),
                progress_step=job.progress_total,
            )

    def fail(self, delivery: Delivery, code: str, detail: str) -> Job | None:
        with self._cond:
            return self._finish(delivery, JobStatus.FAILED, error_code=code, error_detail=detail)

    def dismiss(self, delivery: Delivery) -> Job | None:
        with self._cond:
            return self._finish(delivery, JobStatus.DISMISSED)

    def release(self, delivery: Delivery) -> None:
        with self._cond:
            self._ack(delivery.message_id)
            job = self._live_job(delivery.job_id)
            if job is None:
                self._active.discard(delivery.job_id)
                return
            # terminal, or a stale delivery (the job was queued again since): nothing to give back
            if job.status.is_terminal or job.message_id != delivery.message_id:
                return
            if job.cancel_requested:
                self._settle(job, JobStatus.DISMISSED)
                return
            # an accepted job was claimed but never started (a worker stopping between claim and
            # start): queued again like a running one, or it would never run
            started = job.status is JobStatus.RUNNING
            message_id = self._enqueue(job.id)
            self._put(
                job.replace(
                    status=JobStatus.ACCEPTED,
                    deliveries=job.deliveries - 1 if started else job.deliveries,
                    worker=None,
                    message_id=message_id,
                    progress_step=0,
                    updated_ms=now_ms(),
                )
            )

    def heartbeat(self, consumer: str) -> None:
        with self._cond:
            self._heartbeats[consumer] = time.time()

    def remove_worker(self, consumer: str) -> None:
        with self._cond:
            self._heartbeats.pop(consumer, None)

    def prune_consumers(self, max_idle_s: float) -> list[str]:
        # consumers exist here only as owners of pending entries: nothing to remove
        return []

    def observe(self, name: str, value: float) -> None:
        with self._cond:
            histogram = self._histograms[name]
            label = bucket_label(name, value)
            histogram.buckets[label] = histogram.buckets.get(label, 0) + 1
            histogram.count += 1
            histogram.sum += float(value)
