"""Worker faults over a real Redis with real worker processes: kill -9 ten times, a poison job
that always crashes its worker, SIGTERM mid-job."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.reliability.crashing_worker import CRASH_EXIT_CODE, CRASHING_WORKER, POISON_SEED
from tests.support.cluster import (
    RADAR_64,
    REAL_WORKER,
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
# short leases so that reclaims happen within a test's time; a live worker renews every 0.5 s
FAST_FAILOVER = {
    "lease_s": 2.0,
    "heartbeat_interval_s": 0.5,
    "worker_heartbeat_max_age_s": 3,
    "worker_poll_s": 0.3,
    "progress_interval_s": 0.1,
}


FleetFactory = Callable[..., tuple[Cluster, QueueProbe]]


@pytest.fixture()
def fleet_factory(tmp_path: Path, redis_url: str, tiny_model_dir: Path) -> Iterator[FleetFactory]:
    """Make fleets on fresh key prefixes: `make(worker_command=REAL_WORKER, **settings)`."""
    with ExitStack() as made:

        def make(
            worker_command: tuple[str, ...] = REAL_WORKER, **settings: object
        ) -> tuple[Cluster, QueueProbe]:
            return made.enter_context(
                deployment(
                    tmp_path,
                    redis_url,
                    worker_command=worker_command,
                    model_dir=tiny_model_dir,
                    **{**FAST_FAILOVER, **settings},
                )
            )

        yield make


def test_kill_9_ten_times_loses_nothing(fleet_factory: FleetFactory) -> None:
    kills_wanted, jobs_n, steps = 10, 12, 40
    # one job per worker at a time, so a kill hits exactly one job, and batch composition cannot
    # change the numbers; deliberate kills may hit one job many times, hence many deliveries
    fleet, probe = fleet_factory(worker_batch_size=1, max_deliveries=kills_wanted + 2)
    fleet.start_api()
    for _ in range(3):
        fleet.start_worker()
    fleet.wait_workers(3)
    with httpx.Client(base_url=fleet.url, timeout=30) as client:
        seeds = [1000 + i for i in range(jobs_n)]
        ids = [submit(client, RADAR, members=1, steps=steps, seed=s).json()["id"] for s in seeds]

        killed: list[tuple[str, int]] = []  # (job id, step it was at)
        killed_pids: set[int] = set()

        def victim() -> tuple[str, int, int] | None:
            for job_id in ids:
                record = probe.job(job_id)
                step = int(record.get("progress_step") or 0)
                if record.get("status") == "running" and 1 <= step < steps:
                    pid = consumer_pid(record["worker"])
                    proc = fleet.worker_by_pid(pid)
                    if proc is not None and pid not in killed_pids and proc.poll() is None:
                        return job_id, step, pid
            return None

        fleet.supervise(3)
        while len(killed) < kills_wanted:
            job_id, step, pid = wait_for(victim, 90, "a job in the middle of its run", 0.05)
            proc = fleet.worker_by_pid(pid)
            kill(proc)
            killed_pids.add(pid)
            killed.append((job_id, step))
            proc.wait(timeout=30)
        finals = [wait_status(client, job_id, timeout_s=150) for job_id in ids]
        fleet.stop_supervising()

        assert [f["status"] for f in finals] == ["successful"] * jobs_n, fleet.logs()
        assert fleet.replaced >= kills_wanted
        for job_id, _step in killed:
            assert int(probe.job(job_id)["deliveries"]) >= 2
        disturbed = [client.get(f"/v1/nowcasts/{i}/result").content for i in ids]

        # exactly one result each: one success counted per job, nothing pending or dead
        assert probe.counters().get("successful") == jobs_n
        assert (probe.pending(), probe.stream_length(), probe.active()) == (0, 0, set())
        assert probe.dead_letters() == []
        assert all(probe.has_result(i) and not probe.has_input(i) for i in ids)

        # an undisturbed run with the same seeds gives the same forecasts, bit for bit
        again = [submit(client, RADAR, members=1, steps=steps, seed=s).json()["id"] for s in seeds]
        for job_id in again:
            assert wait_status(client, job_id, timeout_s=120)["status"] == "successful"
        for job_id, first in zip(again, disturbed, strict=True):
            undisturbed = client.get(f"/v1/nowcasts/{job_id}/result").content
            np.testing.assert_array_equal(forecast_precip(first), forecast_precip(undisturbed))
    print(f"killed mid-job at steps {[s for _, s in killed]}; {fleet.replaced} workers replaced")


def test_poison_job_is_dead_lettered_and_does_not_block_others(
    fleet_factory: FleetFactory,
) -> None:
    max_deliveries = 3
    fleet, probe = fleet_factory(
        worker_command=CRASHING_WORKER, worker_batch_size=4, max_deliveries=max_deliveries
    )
    fleet.start_api()
    for _ in range(2):
        fleet.start_worker()
    fleet.wait_workers(2)
    fleet.supervise(2)
    with httpx.Client(base_url=fleet.url, timeout=30) as client:
        poison = submit(client, RADAR, members=1, steps=3, seed=POISON_SEED).json()["id"]
        behind = [
            submit(client, RADAR, members=1, steps=3, seed=s).json()["id"] for s in range(7, 13)
        ]
        failed = wait_status(client, poison, timeout_s=150)
        finals = [wait_status(client, job_id, timeout_s=90) for job_id in behind]

    assert failed["status"] == "failed", fleet.logs()
    assert failed["error"]["code"] == "dead-lettered"
    assert f"delivered {max_deliveries} times" in failed["error"]["detail"]
    record = probe.job(poison)
    assert int(record["deliveries"]) == max_deliveries
    dead = probe.dead_letters()
    assert [d["job_id"] for d in dead] == [poison] and dead[0]["reason"]
    # every job behind the poison finished; none of them was dead-lettered with it
    assert [f["status"] for f in finals] == ["successful"] * len(behind), fleet.logs()
    assert all(int(probe.job(i)["deliveries"]) < max_deliveries for i in behind)
    crashed = [p.returncode for p in fleet.workers if p.poll() is not None]
    assert crashed.count(CRASH_EXIT_CODE) == max_deliveries
    assert (probe.pending(), probe.stream_length(), probe.active()) == (0, 0, set())


def test_sigterm_finishes_or_hands_over_and_loses_nothing(fleet_factory: FleetFactory) -> None:
    """Four workers in turn, each stopped by SIGTERM in another situation."""
    fleet, probe = fleet_factory(worker_batch_size=1, worker_poll_s=4)
    fleet.start_api()

    def progressed(job_id: str, step: int) -> bool:
        return int(probe.job(job_id).get("progress_step") or 0) >= step

    with httpx.Client(base_url=fleet.url, timeout=30) as client:
        # 1. mid-job with time to drain: it finishes the job in hand and takes nothing else
        worker = fleet.start_worker(worker_drain_s=60)
        fleet.wait_workers(1)
        first = submit(client, RADAR, members=1, steps=60, seed=1).json()["id"]
        queued = [submit(client, RADAR, members=1, steps=2, seed=s).json()["id"] for s in (2, 3)]
        wait_for(lambda: progressed(first, 2), 60, "the first job to run", 0.05)
        kill(worker, signal.SIGTERM)
        assert worker.wait(timeout=90) == 0
        assert client.get(f"/v1/nowcasts/{first}").json()["status"] == "successful"
        assert [probe.job(i)["status"] for i in queued] == ["accepted", "accepted"]
        assert all(probe.job(i).get("worker", "") == "" for i in queued)

        # 2. mid-job past its drain time: the job goes back to the queue at once (no lease
        # expiry), not counted as a failed delivery; the queued jobs before it were done
        long = submit(client, RADAR, members=1, steps=400, seed=4).json()["id"]
        worker = fleet.start_worker(worker_drain_s=0.5)
        wait_for(lambda: progressed(long, 2), 90, "the long job to run", 0.05)
        kill(worker, signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
        assert [probe.job(i)["status"] for i in queued] == ["successful"] * 2
        record = probe.job(long)
        assert record["status"] == "accepted" and record["worker"] == ""
        assert int(record["deliveries"]) == 0
        assert probe.stream_length() == 1 and probe.pending() == 0
        client.delete(f"/v1/nowcasts/{long}")
        assert probe.job(long)["status"] == "dismissed"

        # 3. idle, blocked in its queue read (worker_poll_s): a job arriving after the SIGTERM
        # but before that read returns is claimed by a stopping worker, and must go back
        worker = fleet.start_worker()
        fleet.wait_workers(1)
        time.sleep(0.5)  # into its blocking read
        kill(worker, signal.SIGTERM)
        late = submit(client, RADAR, members=1, steps=2, seed=6).json()["id"]
        assert worker.wait(timeout=30) == 0
        assert probe.job(late)["status"] == "accepted"
        assert probe.stream_length() == 1, "the job has no queue entry left: it can never run"

        # 4. the next worker runs it
        fleet.start_worker()
        assert wait_status(client, late, timeout_s=60)["status"] == "successful"
    assert (probe.pending(), probe.stream_length(), probe.active()) == (0, 0, set())
