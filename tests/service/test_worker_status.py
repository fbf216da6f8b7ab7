"""A job claimed into a worker's batch behind another grid's job is not `running` before the
sampler starts on it (issue 12, item 4).

The real `Worker` runs in this process on a real store (Redis and the embedded one); the stand-in
pipeline of `test_worker_store` steps through the sampler callback, and between steps the test
reads the waiting job's record as the API would serve it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from models.config import get_config
from service.netcdf_io import read_radar_netcdf
from service.queue.constants import JobStatus
from service.queue.store import QueuePolicy
from tests.service.broken_netcdf import to_bytes, valid_dataset
from tests.service.test_worker_store import StandInPipeline, make_worker
from tests.support.cluster import RADAR_64
from tests.support.stores import BACKENDS, job_store, make_job

TINY = get_config("tiny")


def _job_for(data: bytes, seed: int):
    """A job record whose input_shape is what the API records for `data`."""
    shape = read_radar_netcdf(data, TINY).rain_mm_h.shape
    return make_job(seed=seed).replace(input_shape=tuple(int(n) for n in shape))


@pytest.mark.parametrize("backend", BACKENDS)
def test_job_behind_another_grids_batch_stays_queued_until_it_runs(
    backend: str, redis_url: str, tmp_path: Path
) -> None:
    big = RADAR_64.read_bytes()
    small = to_bytes(valid_dataset().isel(y=slice(0, 32), x=slice(0, 32)), keep_encoding=False)
    with job_store(backend, redis_url, QueuePolicy()) as store:
        first = store.submit(_job_for(big, seed=1), big).job
        second = store.submit(_job_for(small, seed=2), small).job
        assert first.input_shape[1:] != second.input_shape[1:]  # two grids: two batches
        seen: list[tuple[str, object, object, int]] = []  # (running job, status, started, total)

        def look_at_the_other_job() -> None:
            running = [j for j in (first, second) if store.get(j.id).status is JobStatus.RUNNING]
            assert len(running) == 1, "only the job the sampler is on may be running"
            other = second if running[0].id == first.id else first
            record = store.get(other.id)
            seen.append((running[0].id, record.status, record.started_ms, record.progress_total))

        pipeline = StandInPipeline(TINY, look_at_the_other_job)
        worker = make_worker(store, "w", pipeline, tmp_path, worker_batch_size=2)
        claimed = store.claim("w", count=2, block_s=0.5)
        assert {d.job_id for d in claimed} == {first.id, second.id}  # one claim, one worker
        worker.process(claimed)

        assert pipeline.batches == 2
        # while the first batch ran, the second job was still waiting in the queue's terms
        assert seen[0] == (first.id, JobStatus.ACCEPTED, None, 0)
        # and while the second ran, the first was done
        assert seen[1][0] == second.id and seen[1][1] is JobStatus.SUCCESSFUL
        done_first, done_second = store.get(first.id), store.get(second.id)
        assert done_first.status is done_second.status is JobStatus.SUCCESSFUL
        # it started after the first finished, not when the claim was made
        assert done_second.started_ms >= done_first.finished_ms
        assert done_second.deliveries == 1
