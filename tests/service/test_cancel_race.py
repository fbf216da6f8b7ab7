"""A DELETE that lands after the worker's last cancellation check, before it stores the result.

The job must end `dismissed` with no result kept (the DELETE's `cancel_requested: true` holds),
never `successful` behind the client's back. The worker runs in this process on a real store with
a stand-in pipeline (no model): the DELETE is made exactly in that window, every time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.config import get_config
from service.queue.constants import JobStatus
from service.queue.store import JobStore, QueuePolicy
from tests.service.test_worker_store import StandInPipeline, make_worker
from tests.support.cluster import RADAR_64
from tests.support.stores import BACKENDS, job_store, make_job


class CancelAfterLastStep(StandInPipeline):
    """Steps through the sampler callback (no cancel yet), then the client's DELETE arrives."""

    def __init__(self, store: JobStore) -> None:
        super().__init__(get_config("tiny"))
        self.store = store
        self.cancel_answers: list[Any] = []

    def forecast_batch(self, requests: list[Any], on_step: Any) -> list[np.ndarray]:
        forecasts = super().forecast_batch(requests, on_step)
        for job_id in self.job_ids:
            self.cancel_answers.append(self.store.cancel(job_id))
        return forecasts


@pytest.mark.parametrize("backend", BACKENDS)
def test_cancel_between_last_step_and_completion_dismisses(
    backend: str, redis_url: str, tmp_path: Path
) -> None:
    with job_store(backend, redis_url, QueuePolicy(lease_s=5)) as store:
        job = store.submit(make_job(), RADAR_64.read_bytes()).job
        pipeline = CancelAfterLastStep(store)
        pipeline.job_ids = [job.id]
        worker = make_worker(store, "w", pipeline, tmp_path)
        worker.process(store.claim("w", count=1, block_s=0.5))

        # what the DELETE answered: the job was running and the cancel was taken
        (answer,) = pipeline.cancel_answers
        assert answer.status is JobStatus.RUNNING and answer.cancel_requested
        # so the job must not end successful with its result kept
        after = store.get(job.id)
        assert after.status is JobStatus.DISMISSED, after.status
        assert store.get_result(job.id) is None
        assert store.load_input(job.id) is None  # nothing left behind
        assert store.active_count() == 0
        assert store.claim("w", count=1, block_s=0.1) == []  # acknowledged, not redelivered


@pytest.mark.parametrize("backend", BACKENDS)
def test_cancel_after_completion_reports_it_came_too_late(backend: str, redis_url: str) -> None:
    """The other order: the DELETE sees the finished job and says so (dismissed, result gone)."""
    with job_store(backend, redis_url, QueuePolicy(lease_s=5)) as store:
        job = store.submit(make_job(), b"radar").job
        (delivery,) = store.claim("w", count=1, block_s=0.5)
        store.start(delivery, "w")
        assert store.complete(delivery, b"forecast").status is JobStatus.SUCCESSFUL
        answer = store.cancel(job.id)
        assert answer.status is JobStatus.DISMISSED and answer.finished_ms is not None
        assert store.get_result(job.id) is None
