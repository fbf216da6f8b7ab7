"""The `JobStore` interface shared by the API (producer) and the workers (consumer).

Two backends implement it: `RedisJobStore` (a stream + consumer group, one hash per job, blobs
with TTLs) and `MemoryJobStore` (the embedded default for one machine, same semantics in-process).

Guarantees every backend gives:
- at-least-once delivery: a claimed job whose lease is not renewed for `lease_s` is handed to
  another consumer; after `max_deliveries` deliveries the job is dead-lettered and `failed`;
- a job leaves the queue (is acknowledged) only after its terminal state, and for a success its
  result, is stored; the first stored result wins, so a redelivered job never yields a second,
  different result;
- terminal states are final: a late finish of a redelivered or cancelled job changes nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any

from service.queue.jobs import Job
from service.settings import Settings


class QueueFullError(Exception):
    """Submit refused: `max_queue_length` jobs are accepted or running."""


class IdempotencyConflictError(Exception):
    """Submit refused: the Idempotency-Key was used before with another payload."""


class StoreUnavailableError(Exception):
    """The backing store (Redis) cannot be reached."""


class StoreFullError(StoreUnavailableError):
    """The backing store refuses writes: Redis is at `maxmemory` (noeviction). Transient for the
    client (a 503 + Retry-After): memory frees as results expire or are fetched and dismissed."""


class TenantQuotaError(QueueFullError):
    """Submit refused: the tenant holds `policy.max_jobs_per_tenant` accepted or running jobs."""


def _default(name: str) -> Any:
    return Settings.model_fields[name].default


@dataclass(frozen=True)
class QueuePolicy:
    """Lifetimes and limits of the queue: the `Settings` fields of the same names (and defaults)."""

    result_ttl_s: int = _default("result_ttl_s")
    input_ttl_s: int = _default("input_ttl_s")
    job_ttl_s: int = _default("job_ttl_s")
    idempotency_ttl_s: int = _default("idempotency_ttl_s")
    lease_s: float = _default("lease_s")
    max_deliveries: int = _default("max_deliveries")
    max_queue_length: int = _default("max_queue_length")
    max_jobs_per_tenant: int | None = _default("max_jobs_per_tenant")
    dead_consumer_idle_s: float = _default("dead_consumer_idle_s")

    @property
    def tenant_limit(self) -> int:
        """Active jobs one tenant may hold: `max_jobs_per_tenant`, or half the queue."""
        if self.max_jobs_per_tenant is not None:
            return min(self.max_jobs_per_tenant, self.max_queue_length)
        return max(1, self.max_queue_length // 2)

    @classmethod
    def from_settings(cls, settings: Settings) -> QueuePolicy:
        return cls(**{item.name: getattr(settings, item.name) for item in fields(cls)})


@dataclass(frozen=True)
class Idempotency:
    """An Idempotency-Key and the fingerprint (SHA-256 of input and parameters) it was sent with."""

    key: str
    fingerprint: str


@dataclass(frozen=True)
class SubmitResult:
    job: Job
    created: bool  # False: an earlier job with the same Idempotency-Key and payload


@dataclass(frozen=True)
class Delivery:
    """One hand-over of a job to a consumer; `message_id` identifies the queue entry."""

    job_id: str
    message_id: str


@dataclass(frozen=True)
class StartResult:
    """What `JobStore.start` decided: `job` is set only when the consumer should run it."""

    outcome: str  # "run" | "skip" (already terminal or gone) | "dismissed" | "dead_lettered"
    job: Job | None = None


@dataclass
class HistogramSnapshot:
    # upper bound (as text) -> count in that bucket alone (not cumulative)
    buckets: dict[str, int] = field(default_factory=dict)
    count: int = 0
    sum: float = 0.0


@dataclass
class MetricsSnapshot:
    """Counters and histograms that workers recorded, plus live queue figures."""

    counters: dict[str, dict[str, int]]
    histograms: dict[str, HistogramSnapshot]
    active_jobs: int  # accepted or running
    in_flight: int  # delivered to a worker and not yet acknowledged
    dead_letters: int
    live_workers: int


class JobStore(ABC):
    """Job records, input/result blobs and the work queue behind one interface."""

    policy: QueuePolicy

    # ------------------------------------------------------------------ producer (API) side
    @abstractmethod
    def submit(
        self, job: Job, input_bytes: bytes, idempotency: Idempotency | None = None
    ) -> SubmitResult:
        """Store the job and its input, then enqueue it.

        Raises `QueueFullError` past `policy.max_queue_length` active jobs, `TenantQuotaError`
        past `policy.tenant_limit` active jobs of the job's tenant, and
        `IdempotencyConflictError` when the key was used with another fingerprint.
        """

    @abstractmethod
    def get(self, job_id: str) -> Job | None:
        """The job, or None when unknown or expired."""

    def get_many(self, job_ids: list[str]) -> dict[str, Job | None]:
        """`get` of several jobs (one round trip where the backend can)."""
        return {job_id: self.get(job_id) for job_id in job_ids}

    @abstractmethod
    def list_jobs(self, tenant: str, offset: int, limit: int) -> tuple[list[Job], int]:
        """The tenant's jobs, newest first, and the total count."""

    @abstractmethod
    def cancel(self, job_id: str) -> Job | None:
        """Dismiss a job: an accepted job at once, a running one by flag (the worker stops at its
        next sampler step), a successful one by dropping its result. Returns the job after."""

    @abstractmethod
    def get_result(self, job_id: str) -> bytes | None:
        """The stored forecast NetCDF, or None when absent or expired."""

    def open_result(self, job_id: str) -> Iterator[bytes] | None:
        """The stored forecast as chunks (a download streams them), or None like `get_result`."""
        data = self.get_result(job_id)
        return None if data is None else iter((data,))

    def sweep_blobs(self) -> int:
        """Delete inputs and results past their TTL from a blob store; how many (0 where the
        store expires them itself)."""
        return 0

    @abstractmethod
    def active_count(self) -> int:
        """Jobs accepted or running (what the queue-length limit counts)."""

    @abstractmethod
    def ping(self) -> None:
        """Raise `StoreUnavailableError` when the store cannot be reached."""

    def check_writable(self) -> None:
        """Raise `StoreUnavailableError` (`StoreFullError` when out of memory) unless the store
        takes writes now: /readyz must not say ready while every submit would fail."""
        self.ping()

    @abstractmethod
    def live_workers(self, max_age_s: float) -> list[str]:
        """Consumer names of the workers whose last heartbeat is younger than `max_age_s`."""

    def live_worker_count(self, max_age_s: float) -> int:
        return len(self.live_workers(max_age_s))

    @abstractmethod
    def metrics_snapshot(self, worker_max_age_s: float) -> MetricsSnapshot:
        """Everything /metrics reports, read at scrape time."""

    # ------------------------------------------------------------------ consumer (worker) side
    @abstractmethod
    def claim(self, consumer: str, count: int, block_s: float) -> list[Delivery]:
        """Up to `count` deliveries: first jobs whose lease expired (dead consumers), then new
        ones, waiting up to `block_s` when there are none."""

    @abstractmethod
    def start(self, delivery: Delivery, consumer: str) -> StartResult:
        """Count the delivery and mark the job running, or settle it (skip, dismissed,
        dead-lettered after `policy.max_deliveries`) and acknowledge it."""

    @abstractmethod
    def renew_leases(self, consumer: str, deliveries: list[Delivery]) -> list[Delivery]:
        """Keep the deliveries that `consumer` still owns for another `policy.lease_s`.

        Returns those it no longer owns (its lease ran out and another consumer took them, or
        they were acknowledged) without taking them back: the caller must drop those jobs, and
        neither finish nor release them.
        """

    @abstractmethod
    def set_progress(self, job_id: str, step: int, total: int) -> None:
        """Record sampler progress of a running job."""

    @abstractmethod
    def cancel_requested(self, job_ids: list[str]) -> set[str]:
        """Those of `job_ids` whose cancellation was requested (or that vanished)."""

    @abstractmethod
    def load_input(self, job_id: str) -> bytes | None:
        """The uploaded radar NetCDF, or None when it expired."""

    @abstractmethod
    def complete(self, delivery: Delivery, result_bytes: bytes) -> Job | None:
        """Store the result (first one wins), mark the job successful, then acknowledge."""

    @abstractmethod
    def fail(self, delivery: Delivery, code: str, detail: str) -> Job | None:
        """Mark the job failed with a reason, then acknowledge."""

    @abstractmethod
    def dismiss(self, delivery: Delivery) -> Job | None:
        """Mark a cancelled job dismissed, then acknowledge."""

    @abstractmethod
    def release(self, delivery: Delivery) -> None:
        """Give an unfinished job back to the queue (worker shutdown); not counted as a delivery."""

    @abstractmethod
    def heartbeat(self, consumer: str) -> None:
        """Record that `consumer` is alive now."""

    @abstractmethod
    def remove_worker(self, consumer: str) -> None:
        """Forget a consumer's heartbeat (clean shutdown)."""

    @abstractmethod
    def prune_consumers(self, max_idle_s: float) -> list[str]:
        """Remove from the queue the consumers idle longer than `max_idle_s` that hold no
        pending job and sent no heartbeat as recently (dead workers); their names."""

    @abstractmethod
    def observe(self, name: str, value: float) -> None:
        """Add one observation to histogram `name` (see `constants.HISTOGRAM_BUCKETS`)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


def create_store(settings: Settings) -> JobStore:
    """The Redis store when `settings.redis_url` is set, else a new embedded in-process store."""
    policy = QueuePolicy.from_settings(settings)
    if settings.redis_url:
        from service.queue.redis_store import RedisJobStore

        return RedisJobStore.from_url(
            settings.redis_url, settings.redis_key_prefix, policy, settings.blob_url
        )
    from service.queue.memory_store import MemoryJobStore

    return MemoryJobStore(policy)
