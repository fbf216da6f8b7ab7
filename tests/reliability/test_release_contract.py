"""Giving jobs back (`JobStore.release`) loses none and duplicates none, on both backends.

The worker faults over processes found that a job claimed by a stopping worker before it started
it was acknowledged and dropped; these pin the store contract directly, without processes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.queue.constants import JobStatus
from service.queue.store import JobStore, QueuePolicy
from tests.support.stores import BACKENDS, job_store, make_job

POLICY = QueuePolicy(lease_s=30.0, max_deliveries=3)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, redis_url: str) -> Iterator[JobStore]:
    with job_store(request.param, redis_url, POLICY) as opened:
        yield opened


def test_release_before_start_requeues_the_job(store: JobStore) -> None:
    job = store.submit(make_job(), b"radar").job
    (delivery,) = store.claim("stopping", count=1, block_s=0.5)
    store.release(delivery)  # SIGTERM between claim and start
    after = store.get(job.id)
    assert after.status is JobStatus.ACCEPTED and after.deliveries == 0
    (again,) = store.claim("next", count=1, block_s=0.5)
    assert again.job_id == job.id
    started = store.start(again, "next")
    assert started.outcome == "run" and started.job.deliveries == 1
    store.complete(again, b"forecast")
    assert store.get(job.id).status is JobStatus.SUCCESSFUL
    assert store.claim("next", count=1, block_s=0.1) == []


def test_release_while_running_requeues_without_counting(store: JobStore) -> None:
    job = store.submit(make_job(), b"radar").job
    (delivery,) = store.claim("stopping", count=1, block_s=0.5)
    assert store.start(delivery, "stopping").outcome == "run"
    store.release(delivery)
    assert store.get(job.id).deliveries == 0
    (again,) = store.claim("next", count=1, block_s=0.5)
    assert again.job_id == job.id


def test_stale_release_adds_no_second_entry(store: JobStore) -> None:
    job = store.submit(make_job(), b"radar").job
    (first,) = store.claim("a", count=1, block_s=0.5)
    store.release(first)
    store.release(first)  # the same delivery again (a late or repeated release)
    (again,) = store.claim("b", count=2, block_s=0.5)
    assert again.job_id == job.id
    assert store.claim("c", count=2, block_s=0.1) == []  # exactly one entry is left


def test_release_of_a_finished_job_changes_nothing(store: JobStore) -> None:
    job = store.submit(make_job(), b"radar").job
    (delivery,) = store.claim("a", count=1, block_s=0.5)
    store.start(delivery, "a")
    store.complete(delivery, b"forecast")
    store.release(delivery)
    assert store.get(job.id).status is JobStatus.SUCCESSFUL
    assert store.claim("b", count=1, block_s=0.1) == []
    assert store.get_result(job.id) == b"forecast"
