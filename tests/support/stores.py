"""`JobStore` backends and jobs for the store contract tests (tests/service, tests/reliability)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from service.queue.jobs import Job, JobParams, new_job_id
from service.queue.memory_store import MemoryJobStore
from service.queue.store import JobStore, QueuePolicy

BACKENDS = ("memory", "redis")


@contextmanager
def job_store(backend: str, redis_url: str, policy: QueuePolicy) -> Iterator[JobStore]:
    """An empty store of `backend` ("memory" or "redis": a fresh key prefix, deleted after)."""
    if backend == "memory":
        yield MemoryJobStore(policy)
        return
    from service.queue.redis_store import RedisJobStore

    redis_store = RedisJobStore.from_url(redis_url, f"nowcast-test-{uuid.uuid4().hex}", policy)
    try:
        yield redis_store
    finally:
        redis_store.delete_all_keys()
        redis_store.close()


def make_job(tenant: str = "alpha", seed: int = 1) -> Job:
    """A small valid job record of `tenant` (2 members, 3 steps, a 7 x 32 x 32 input)."""
    params = JobParams(
        members=2,
        steps=3,
        seed=seed,
        constraint=None,
        products=("mean",),
        thresholds_mm_h=(1.0,),
        percentiles=(50.0,),
    )
    return Job(
        id=new_job_id(), tenant=tenant, params=params, input_shape=(7, 32, 32), input_sha256="x"
    )
