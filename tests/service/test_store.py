"""Contract tests of the JobStore: the same scenarios against the embedded store and real Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from service.queue.constants import JobStatus
from service.queue.store import (
    Idempotency,
    IdempotencyConflictError,
    JobStore,
    QueueFullError,
    QueuePolicy,
)
from tests.support.stores import BACKENDS, job_store, make_job

POLICY = QueuePolicy(
    lease_s=0.3, max_deliveries=2, max_queue_length=3, max_jobs_per_tenant=3, result_ttl_s=60
)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, redis_url: str) -> Iterator[JobStore]:
    with job_store(request.param, redis_url, POLICY) as opened:
        yield opened


def claim_one(store: JobStore, consumer: str):
    deliveries = store.claim(consumer, count=1, block_s=0.5)
    assert len(deliveries) == 1
    return deliveries[0]


def test_submit_claim_complete_round_trip(store: JobStore) -> None:
    job = store.submit(make_job(), b"radar").job
    assert store.get(job.id).status is JobStatus.ACCEPTED
    delivery = claim_one(store, "w1")
    assert delivery.job_id == job.id
    started = store.start(delivery, "w1")
    assert started.outcome == "run" and started.job.status is JobStatus.RUNNING
    assert store.load_input(job.id) == b"radar"
    store.set_progress(job.id, 2, 3)
    assert store.get(job.id).progress_step == 2
    done = store.complete(delivery, b"forecast")
    assert done.status is JobStatus.SUCCESSFUL and done.result_expires_ms > done.finished_ms
    assert store.get_result(job.id) == b"forecast"
    assert store.active_count() == 0
    assert store.claim("w1", count=1, block_s=0.1) == []
    snapshot = store.metrics_snapshot(worker_max_age_s=10)
    assert snapshot.counters["jobs"]["successful"] == 1
    assert snapshot.in_flight == 0


def test_first_result_wins_on_redelivery(store: JobStore) -> None:
    job = store.submit(make_job(), b"radar").job
    first = claim_one(store, "w1")
    store.start(first, "w1")
    time.sleep(POLICY.lease_s + 0.2)  # w1 stops renewing: its lease runs out
    second = claim_one(store, "w2")
    assert second.job_id == job.id
    assert store.start(second, "w2").job.deliveries == 2
    store.complete(second, b"from w2")
    late = store.complete(first, b"from w1")
    assert late.status is JobStatus.SUCCESSFUL
    assert store.get_result(job.id) == b"from w2"
    assert store.metrics_snapshot(10).counters["jobs"]["successful"] == 1


def test_lease_renewal_keeps_the_job(store: JobStore) -> None:
    store.submit(make_job(), b"radar")
    delivery = claim_one(store, "w1")
    store.start(delivery, "w1")
    for _ in range(3):
        time.sleep(POLICY.lease_s / 2)
        assert store.renew_leases("w1", [delivery]) == []  # nothing lost
    assert store.claim("w2", count=1, block_s=0.05) == []


def test_renewal_never_takes_back_a_reclaimed_job(store: JobStore) -> None:
    job = store.submit(make_job(), b"radar").job
    stale = claim_one(store, "a")
    store.start(stale, "a")
    time.sleep(POLICY.lease_s + 0.2)  # a stalls past its lease
    taken = claim_one(store, "b")
    assert taken.job_id == job.id
    # a learns that it lost the job, and the entry stays b's
    assert store.renew_leases("a", [stale]) == [stale]
    assert store.renew_leases("b", [taken]) == []
    assert store.renew_leases("a", [stale]) == [stale]
    assert store.start(taken, "b").outcome == "run"
    assert store.complete(taken, b"from b").status is JobStatus.SUCCESSFUL
    assert store.get_result(job.id) == b"from b"


def test_dead_letter_after_max_deliveries(store: JobStore) -> None:
    job = store.submit(make_job(), b"radar").job
    for n in range(POLICY.max_deliveries):
        delivery = claim_one(store, f"w{n}")
        assert store.start(delivery, f"w{n}").outcome == "run"
        time.sleep(POLICY.lease_s + 0.2)
    delivery = claim_one(store, "last")
    assert store.start(delivery, "last").outcome == "dead_lettered"
    failed = store.get(job.id)
    assert failed.status is JobStatus.FAILED and failed.error_code == "dead-lettered"
    assert "delivered 2 times" in failed.error_detail
    snapshot = store.metrics_snapshot(10)
    assert snapshot.dead_letters == 1 and snapshot.active_jobs == 0


def test_cancel_accepted_and_running(store: JobStore) -> None:
    waiting = store.submit(make_job(), b"a").job
    assert store.cancel(waiting.id).status is JobStatus.DISMISSED
    running = store.submit(make_job(), b"b").job
    delivery = claim_one(store, "w1")
    assert delivery.job_id == running.id  # the dismissed job left the queue
    store.start(delivery, "w1")
    after = store.cancel(running.id)
    assert after.status is JobStatus.RUNNING and after.cancel_requested
    assert store.cancel_requested([running.id]) == {running.id}
    assert store.dismiss(delivery).status is JobStatus.DISMISSED
    assert store.active_count() == 0


def test_release_requeues_without_counting(store: JobStore) -> None:
    job = store.submit(make_job(), b"radar").job
    delivery = claim_one(store, "w1")
    store.start(delivery, "w1")
    store.release(delivery)
    assert store.get(job.id).status is JobStatus.ACCEPTED
    again = claim_one(store, "w2")
    assert store.start(again, "w2").job.deliveries == 1


def test_queue_limit_and_idempotency(store: JobStore) -> None:
    key = Idempotency("k1", "fingerprint-a")
    first = store.submit(make_job(), b"a", key)
    replay = store.submit(make_job(), b"a", key)
    assert first.created and not replay.created and replay.job.id == first.job.id
    with pytest.raises(IdempotencyConflictError):
        store.submit(make_job(), b"b", Idempotency("k1", "fingerprint-b"))
    # the same key of another tenant is another key
    assert store.submit(make_job("beta"), b"a", key).created
    store.submit(make_job(), b"c")
    with pytest.raises(QueueFullError):
        store.submit(make_job(), b"d")


def test_idempotency_keys_of_tenants_never_collide(store: JobStore) -> None:
    # joined by ':' alone, both pairs were the storage key "acme:x:k1"
    first = store.submit(make_job("acme"), b"a", Idempotency("x:k1", "fingerprint-a"))
    other = store.submit(make_job("acme:x"), b"a", Idempotency("k1", "fingerprint-a"))
    assert first.created and other.created
    assert other.job.tenant == "acme:x" and other.job.id != first.job.id
    # another payload under each tenant's own key is a conflict there, and only there
    with pytest.raises(IdempotencyConflictError):
        store.submit(make_job("acme:x"), b"b", Idempotency("k1", "fingerprint-b"))
    replay = store.submit(make_job("acme"), b"a", Idempotency("x:k1", "fingerprint-a"))
    assert not replay.created and replay.job.id == first.job.id


@pytest.mark.parametrize("backend", BACKENDS)
def test_reclaim_finds_an_idle_job_behind_pages_of_live_ones(backend: str, redis_url: str) -> None:
    # one XAUTOCLAIM page with COUNT 1 scans 10 pending entries; the idle one is the 26th
    policy = QueuePolicy(lease_s=1.0, max_queue_length=100)
    with job_store(backend, redis_url, policy) as store:
        ids = [store.submit(make_job(seed=n), b"radar").job.id for n in range(26)]
        held = store.claim("a", count=26, block_s=0.5)
        assert [d.job_id for d in held] == ids
        time.sleep(policy.lease_s + 0.3)
        assert not store.renew_leases("a", held[:-1])  # a keeps all but the last alive
        (taken,) = store.claim("b", count=1, block_s=0.1)
        assert taken.job_id == ids[-1]
        # the next call resumes the scan and finds nothing more to take
        assert store.claim("b", count=1, block_s=0.1) == []


def test_list_jobs_is_per_tenant_newest_first(store: JobStore) -> None:
    ids = [store.submit(make_job("alpha"), b"x").job.id for _ in range(2)]
    store.submit(make_job("beta"), b"x")
    jobs, total = store.list_jobs("alpha", offset=0, limit=10)
    assert total == 2 and {j.id for j in jobs} == set(ids)
    assert jobs[0].created_ms >= jobs[1].created_ms
    page, _ = store.list_jobs("alpha", offset=1, limit=1)
    assert len(page) == 1 and page[0].id == jobs[1].id


def test_heartbeats_and_histograms(store: JobStore) -> None:
    store.heartbeat("w1")
    assert store.live_worker_count(max_age_s=5) == 1
    store.remove_worker("w1")
    assert store.live_worker_count(max_age_s=5) == 0
    store.observe("run_s", 1.5)
    store.observe("run_s", 700)
    hist = store.metrics_snapshot(5).histograms["run_s"]
    assert hist.count == 2 and hist.sum == pytest.approx(701.5)
    assert hist.buckets == {"2.0": 1, "1800.0": 1}
