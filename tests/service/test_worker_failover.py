"""Worker failures over a real Redis: kill -9 mid-job, SIGTERM drain. Two real worker processes."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.cluster import (
    RADAR_64,
    Cluster,
    consumer_pid,
    deployment,
    forecast_precip,
    kill,
    submit,
    wait_for,
    wait_status,
)
from tests.support.queue_probe import QueueProbe

pytestmark = pytest.mark.integration

RADAR = RADAR_64.read_bytes()
LEASE_S = 3.0


@pytest.fixture(scope="module")
def deployed(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, tiny_model_dir: Path
) -> Iterator[tuple[Cluster, QueueProbe]]:
    with deployment(
        tmp_path_factory.mktemp("failover"),
        redis_url,
        model_dir=tiny_model_dir,
        lease_s=LEASE_S,
        heartbeat_interval_s=0.5,
        worker_heartbeat_max_age_s=2,
        worker_poll_s=0.5,
        worker_drain_s=1,
        progress_interval_s=0.1,
    ) as (cluster, probe):
        cluster.start(workers=2)
        yield cluster, probe


@pytest.fixture()
def client(deployed: tuple[Cluster, QueueProbe]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=deployed[0].url, timeout=30) as http:
        yield http


def _running_on(client: httpx.Client, job_id: str, min_step: int) -> dict:
    def started() -> dict | None:
        job = client.get(f"/v1/nowcasts/{job_id}").json()
        return job if job["status"] == "running" and job["progress"]["step"] >= min_step else None

    return wait_for(started, 60, f"job {job_id} to pass step {min_step}", interval_s=0.1)


def test_health_check_exit_code(deployed: tuple[Cluster, QueueProbe]) -> None:
    cluster, _ = deployed

    def check(env: dict[str, str]) -> int:
        command = [sys.executable, "-m", "service.cli", "worker", "--check"]
        return subprocess.run(command, env=env, capture_output=True, timeout=60).returncode

    assert check(cluster.env) == 0
    assert check({**cluster.env, "NOWCAST_REDIS_KEY_PREFIX": "nowcast-test-nobody"}) == 1
    assert check({**cluster.env, "NOWCAST_REDIS_URL": "redis://127.0.0.1:1/0"}) == 1


def test_kill_9_mid_job_another_worker_finishes(
    deployed: tuple[Cluster, QueueProbe], client: httpx.Client
) -> None:
    cluster, probe = deployed
    job = submit(client, RADAR, members=1, steps=150, seed=21).json()
    _running_on(client, job["id"], min_step=5)
    victim = probe.job(job["id"])["worker"]
    kill(cluster.worker_by_pid(consumer_pid(victim)))

    final = wait_status(client, job["id"], timeout_s=90)
    assert final["status"] == "successful"
    record = probe.job(job["id"])
    assert int(record["deliveries"]) == 2
    assert record["worker"] != victim
    # exactly one result: one success counted, nothing left pending or dead-lettered
    assert probe.counters()["successful"] == 1
    assert probe.pending() == 0
    assert probe.dead_letters() == []
    result = client.get(f"/v1/nowcasts/{job['id']}/result").content

    # ... and it is the forecast an undisturbed run with the same seed gives
    again = submit(client, RADAR, members=1, steps=150, seed=21).json()
    assert wait_status(client, again["id"], timeout_s=90)["status"] == "successful"
    undisturbed = client.get(f"/v1/nowcasts/{again['id']}/result").content
    np.testing.assert_array_equal(forecast_precip(result), forecast_precip(undisturbed))


def test_sigterm_releases_the_job_to_another_worker(
    deployed: tuple[Cluster, QueueProbe], client: httpx.Client
) -> None:
    cluster, probe = deployed
    cluster.start_worker()  # the kill test left one worker
    cluster.wait_workers(2)
    job = submit(client, RADAR, members=1, steps=1000, seed=2).json()
    _running_on(client, job["id"], min_step=3)
    first = probe.job(job["id"])["worker"]
    proc = cluster.worker_by_pid(consumer_pid(first))
    kill(proc, signal.SIGTERM)
    assert proc.wait(timeout=20) == 0  # drained: released the job after worker_drain_s

    def moved() -> bool:
        return probe.job(job["id"])["worker"] not in ("", first)

    wait_for(moved, 30, "another worker to take the released job")
    assert int(probe.job(job["id"])["deliveries"]) == 1  # a release is not a failed delivery
    client.delete(f"/v1/nowcasts/{job['id']}")
    assert wait_status(client, job["id"], timeout_s=30)["status"] == "dismissed"
