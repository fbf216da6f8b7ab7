"""The embedded default (no Redis) driven by `nowcast submit`, and the queue-length limit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import xarray as xr

from tests.service.cluster import RADAR_64, REPO, Cluster, delete_prefix, redis_env, submit

pytestmark = pytest.mark.integration


def test_embedded_round_trip_with_submit_cli(tmp_path: Path, tiny_model_dir: Path) -> None:
    cluster = Cluster(tmp_path, {"NOWCAST_MODEL_DIR": str(tiny_model_dir)})
    cluster.env.pop("NOWCAST_REDIS_URL", None)
    try:
        cluster.start_api(workers=1)
        cluster.wait_workers(1)
        output = tmp_path / "forecast.nc"
        done = subprocess.run(
            [
                sys.executable, "-m", "service.cli", "submit", str(RADAR_64), "-o", str(output),
                "--members", "2", "--steps", "3", "--seed", "5", "--target-mm-h", "4",
                "--url", cluster.url, "--quiet",
            ],
            cwd=REPO, env=cluster.env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr + cluster.logs()
        with xr.open_dataset(output) as ds:
            assert ds.sizes["realization"] == 2
            assert '"target_mm_h": 4.0' in ds.attrs["constraint"]
        jobs = httpx.get(f"{cluster.url}/v1/nowcasts").json()
        assert jobs["total"] == 1 and jobs["items"][0]["status"] == "successful"
    finally:
        cluster.stop()


def test_queue_limit_answers_503(tmp_path: Path, redis_url: str, tiny_model_dir: Path) -> None:
    env, prefix = redis_env(redis_url, model_dir=tiny_model_dir, max_queue_length=2)
    cluster = Cluster(tmp_path, env)  # the API alone: nothing drains the queue
    try:
        cluster.start_api(workers=0)
        with httpx.Client(base_url=cluster.url, timeout=30) as client:
            radar = RADAR_64.read_bytes()
            assert [submit(client, radar).status_code for _ in range(2)] == [202, 202]
            full = submit(client, radar)
            assert full.status_code == 503
            assert full.json()["code"] == "queue-full"
            assert int(full.headers["retry-after"]) > 0
            not_ready = client.get("/readyz")
            assert not_ready.status_code == 503 and not_ready.json()["code"] == "no-worker"
    finally:
        cluster.stop()
        delete_prefix(redis_url, prefix)
