"""Redis restarts (AOF on) while jobs are queued and running: every job completes afterwards,
the worker processes ride it out, and the API answers again without a restart of its own."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.support.cluster import RADAR_64, TERMINAL, Cluster, redis_env, submit, wait_for
from tests.support.queue_probe import QueueProbe
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

RADAR = RADAR_64.read_bytes()


def _status(client: httpx.Client, job_id: str) -> str | None:
    """The job's status, or None while the API cannot tell (Redis down)."""
    try:
        response = client.get(f"/v1/nowcasts/{job_id}")
    except httpx.HTTPError:
        return None
    return response.json()["status"] if response.status_code == 200 else None


def test_jobs_survive_redis_restarts(tmp_path: Path, tiny_model_dir: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    env, prefix = redis_env(
        server.url,
        model_dir=tiny_model_dir,
        lease_s=2.0,
        heartbeat_interval_s=0.5,
        worker_heartbeat_max_age_s=3,
        worker_poll_s=0.3,
        progress_interval_s=0.1,
        worker_batch_size=2,
    )
    fleet = Cluster(tmp_path, env)
    probe = QueueProbe(server.url, prefix)
    try:
        fleet.start(workers=2)
        workers = list(fleet.workers)
        with httpx.Client(base_url=fleet.url, timeout=30) as client:
            ids: list[str] = []
            outage_answers = []
            for wave, sig in enumerate((signal.SIGTERM, signal.SIGKILL)):  # clean, then a crash
                wave_ids = [
                    submit(client, RADAR, members=1, steps=25, seed=10 * wave + s).json()["id"]
                    for s in range(6)
                ]
                ids += wave_ids

                def mid_run(wave_ids: list[str] = wave_ids) -> bool:
                    statuses = [probe.job(i)["status"] for i in wave_ids]
                    return "running" in statuses and "accepted" in statuses

                wait_for(mid_run, 60, "jobs both running and queued", interval_s=0.05)
                server.stop(sig)
                probe.db.connection_pool.disconnect()
                outage_answers.append(client.get(f"/v1/nowcasts/{ids[0]}").status_code)
                time.sleep(1.0)
                server.start()

            def all_done() -> bool:
                return all(_status(client, i) in TERMINAL for i in ids)

            wait_for(all_done, 150, "every job to finish after the restarts", interval_s=0.5)
            statuses = [_status(client, i) for i in ids]
            assert statuses == ["successful"] * len(ids), fleet.logs()
            assert all(w.poll() is None for w in workers), "a worker died of the outage"
            assert client.get("/readyz").status_code == 200
            # while Redis was down the API said so (503), it did not fail (500)
            assert outage_answers == [503, 503], outage_answers
        assert probe.counters()["successful"] == len(ids)
        assert (probe.pending(), probe.stream_length(), probe.active()) == (0, 0, set())
        assert probe.dead_letters() == []
    finally:
        fleet.stop()
        probe.close()
        server.stop()
