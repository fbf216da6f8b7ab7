"""The embedded default (no Redis) driven by `nowcast submit`; the queue limit and batching; the
API process staying torch-free."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import xarray as xr

from tests.support.cluster import RADAR_64, REPO, Cluster, deployment, submit, wait_status

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


def test_queue_limit_then_one_batch(tmp_path: Path, redis_url: str, tiny_model_dir: Path) -> None:
    with deployment(
        tmp_path,
        redis_url,
        model_dir=tiny_model_dir,
        max_queue_length=3,
        max_jobs_per_tenant=3,
        worker_batch_size=4,
    ) as (cluster, _probe):
        cluster.start_api(workers=0)  # the API alone: nothing drains the queue yet
        with httpx.Client(base_url=cluster.url, timeout=30) as client:
            radar = RADAR_64.read_bytes()
            jobs = [submit(client, radar, members=1, steps=2) for _ in range(3)]
            assert [r.status_code for r in jobs] == [202, 202, 202]
            full = submit(client, radar)
            assert full.status_code == 503
            assert full.json()["code"] == "queue-full"
            assert int(full.headers["retry-after"]) > 0
            not_ready = client.get("/readyz")
            assert not_ready.status_code == 503 and not_ready.json()["code"] == "no-worker"

            # one worker claims all three (same grid and steps) and runs them as one batch
            cluster.start_worker()
            cluster.wait_workers(1)
            for response in jobs:
                assert wait_status(client, response.json()["id"])["status"] == "successful"
            metrics = client.get("/metrics").text
            assert "nowcast_batch_size_count 1.0" in metrics
            assert "nowcast_batch_size_sum 3.0" in metrics
            assert submit(client, radar, members=1, steps=1).status_code == 202


def test_api_process_never_imports_torch(
    tmp_path: Path, redis_url: str, tiny_model_dir: Path
) -> None:
    code = (
        "import sys; from fastapi.testclient import TestClient; "
        "from service.api.app import create_app; "
        "client = TestClient(create_app()); "
        "assert client.get('/v1/models').status_code == 200; "
        "print('torch' in sys.modules)"
    )
    with deployment(tmp_path, redis_url, model_dir=tiny_model_dir) as (cluster, _probe):
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO,
            env=cluster.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
