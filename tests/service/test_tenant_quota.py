"""Per-tenant queue quotas: one tenant fills its share, the others still get in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.queue.store import JobStore, QueueFullError, QueuePolicy, TenantQuotaError
from tests.support.stores import BACKENDS, job_store, make_job

POLICY = QueuePolicy(max_queue_length=6, max_jobs_per_tenant=3)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, redis_url: str) -> Iterator[JobStore]:
    with job_store(request.param, redis_url, POLICY) as opened:
        yield opened


def test_one_tenant_cannot_lock_the_others_out(store: JobStore) -> None:
    for seed in range(3):
        store.submit(make_job("greedy", seed=seed), b"radar")
    with pytest.raises(TenantQuotaError):
        store.submit(make_job("greedy", seed=9), b"radar")
    # the others still get in, up to the global limit
    for seed in range(3):
        store.submit(make_job(f"other-{seed}", seed=seed), b"radar")
    with pytest.raises(QueueFullError) as refused:
        store.submit(make_job("late"), b"radar")
    assert not isinstance(refused.value, TenantQuotaError)


def test_finished_jobs_free_the_tenants_quota(store: JobStore) -> None:
    jobs = [store.submit(make_job("t", seed=seed), b"radar").job for seed in range(3)]
    with pytest.raises(TenantQuotaError):
        store.submit(make_job("t"), b"radar")
    store.cancel(jobs[0].id)  # dismissed while waiting: no longer active
    store.submit(make_job("t"), b"radar")


def test_default_quota_is_half_the_queue() -> None:
    assert QueuePolicy(max_queue_length=100).tenant_limit == 50
    assert QueuePolicy(max_queue_length=1).tenant_limit == 1
    assert QueuePolicy(max_queue_length=10, max_jobs_per_tenant=20).tenant_limit == 10
