"""The worker against its job store: a lease another worker took over, a Redis not up yet.

The worker runs in this process on a real store; a stand-in pipeline replaces the model (its
`forecast_batch` only calls the sampler callback), so no weights are loaded and torch does no work.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from models.config import ModelConfig, get_config
from service.queue.constants import JobStatus
from service.queue.redis_store import RedisJobStore
from service.queue.store import JobStore, QueuePolicy
from service.settings import Settings
from service.worker import Worker
from tests.support.cluster import RADAR_64, wait_for
from tests.support.redis_server import RedisServer
from tests.support.stores import BACKENDS, job_store, make_job

LEASE_S = 0.3


class StandInPipeline:
    """What the worker needs of `NowcastPipeline`: `config` and a `forecast_batch` that steps
    through the sampler callback and calls `between_steps` after the first step."""

    def __init__(self, config: ModelConfig, between_steps: Callable[[], None] = lambda: None):
        self.config = config
        self.between_steps = between_steps
        self.batches = 0

    def forecast_batch(
        self, requests: list[Any], on_step: Callable[[int, int], None]
    ) -> list[np.ndarray]:
        self.batches += 1
        total = requests[0].steps
        for step in range(1, total + 1):
            on_step(step, total)
            if step == 1:
                self.between_steps()
        frames_out = self.config.frames_out
        return [
            np.zeros((r.members, frames_out, *r.past_mm_h.shape[1:]), np.float32) for r in requests
        ]


def make_worker(
    store: JobStore, consumer: str, pipeline: StandInPipeline, tmp: Path, **settings: Any
) -> Worker:
    worker = Worker(Settings(**settings), store, tmp, consumer=consumer)
    worker.pipeline = pipeline  # set: `run` loads no model
    worker.metadata = SimpleNamespace(name="stand-in", version="0", weights_checksum="")
    return worker


@pytest.mark.parametrize("backend", BACKENDS)
def test_worker_drops_a_job_another_worker_took_over(
    backend: str, redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with job_store(backend, redis_url, QueuePolicy(lease_s=LEASE_S)) as store:
        job = store.submit(make_job(), RADAR_64.read_bytes()).job
        taken = []

        def stall_then_lose_the_lease() -> None:
            # a stalls past its lease, b reclaims the job, then a's heartbeat renews
            time.sleep(LEASE_S + 0.2)
            taken.extend(store.claim("b", count=1, block_s=0.5))
            worker.renew_leases()

        pipeline = StandInPipeline(get_config("tiny"), stall_then_lose_the_lease)
        worker = make_worker(store, "a", pipeline, tmp_path)
        caplog.set_level(logging.INFO, logger="service.worker")
        worker.process(store.claim("a", count=1, block_s=0.5))

        assert [d.job_id for d in taken] == [job.id]
        # a neither stored a result nor settled the job, and the entry is still b's
        after = store.get(job.id)
        assert after.status is JobStatus.RUNNING and store.get_result(job.id) is None
        assert store.renew_leases("b", taken) == []
        assert "lease lost" in caplog.text and "finished" not in caplog.text
        assert pipeline.batches == 1
        assert store.start(taken[0], "b").outcome == "run"
        assert store.complete(taken[0], b"from b").status is JobStatus.SUCCESSFUL


def test_worker_started_while_redis_is_down_waits_for_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(tmp_path / "redis")  # a free port, nothing listening yet
    store = RedisJobStore.from_url(server.url, f"nowcast-test-{uuid.uuid4().hex}", QueuePolicy())
    worker = make_worker(
        store,
        "late",
        StandInPipeline(get_config("tiny")),
        tmp_path,
        worker_poll_s=0.2,
        heartbeat_interval_s=0.2,
    )
    caplog.set_level(logging.INFO, logger="service.worker")
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        time.sleep(2.0)  # refused: tries at about 0, 0.5 and 1.5 s
        assert thread.is_alive(), "the worker gave up while Redis was down"
        server.start()
        wait_for(lambda: store.live_workers(10), 30, "the worker's first heartbeat")
        # it works: claims a job (an input that is no NetCDF fails fast, without the model)
        job = store.submit(make_job(), b"not netcdf").job
        wait_for(lambda: store.get(job.id).status.is_terminal, 30, "the job to be settled")
        settled = store.get(job.id)
        assert settled.status is JobStatus.FAILED and settled.worker == "late"
    finally:
        stop.set()
        thread.join(timeout=10)
        store.close()
        server.stop()
    assert not thread.is_alive()
    # each retry logged, the wait doubling
    assert "does not answer" in caplog.text
    assert "retry 1 in 0.5 s" in caplog.text and "retry 2 in 1.0 s" in caplog.text
    assert "the job store answers after" in caplog.text
