"""The service over HTTP: real uvicorn, real Redis, two real worker processes, tiny random model."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
import xarray as xr

from tests.support.cluster import (
    DATA,
    KEY_A,
    RADAR_64,
    SHARED_MAX_BODY_BYTES,
    Cluster,
    forecast_precip,
    sse_events,
    submit,
    wait_for,
    wait_status,
)

pytestmark = pytest.mark.integration


RADAR = RADAR_64.read_bytes()


def test_round_trip_with_events(alpha: httpx.Client, tmp_path: Path) -> None:
    response = submit(alpha, RADAR, members=3, steps=4, seed=11, thresholds_mm_h="0.5,2")
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"].endswith(f"/v1/nowcasts/{job['id']}")
    assert int(response.headers["retry-after"]) > 0
    assert job["status"] == "accepted" and job["params"]["seed"] == 11

    events = sse_events(alpha, job["id"])
    assert events[-1]["status"] == "successful"
    assert [e["status"] for e in events].count("successful") == 1
    assert events[-1]["progress"] == {"step": 4, "total": 4, "fraction": 1.0}

    result = alpha.get(f"/v1/nowcasts/{job['id']}/result")
    assert result.status_code == 200
    assert result.headers["content-type"] == "application/x-netcdf"
    path = tmp_path / "forecast.nc"
    path.write_bytes(result.content)
    with xr.open_dataset(path) as ds, xr.open_dataset(RADAR_64) as radar:
        assert ds["precip"].dims == ("realization", "time", "y", "x")
        assert ds.sizes["realization"] == 3 and ds.sizes["time"] == 6
        assert ds["precip"].attrs["units"] == "mm h-1"
        assert list(ds["threshold"].values) == [0.5, 2.0]
        np.testing.assert_array_equal(ds["x"].values, radar["x"].values)
        np.testing.assert_array_equal(ds["y"].values, radar["y"].values)
        last_input = radar["time"].values[-1]
        assert ds["forecast_reference_time"].values == last_input
        assert ds["time"].values[0] == last_input + np.timedelta64(300, "s")
        assert ds.attrs["job_id"] == job["id"] and int(ds.attrs["seed"]) == 11
        assert ds.attrs["Conventions"] == "CF-1.8"

    cfchecks = pytest.importorskip("cfchecker.cfchecks")
    checker = cfchecks.CFChecker(
        cfStandardNamesXML=str(DATA / "cf" / "cf-standard-name-table.xml"),
        cfAreaTypesXML=str(DATA / "cf" / "area-type-table.xml"),
        cfRegionNamesXML=str(DATA / "cf" / "standardized-region-list.xml"),
        silent=True,
    )
    checker.checker(str(path))
    assert checker.get_total_counts()["ERROR"] == 0


def test_same_seed_same_forecast(alpha: httpx.Client) -> None:
    forecasts = []
    for _ in range(2):  # one after the other, so that neither shares a batch
        job = submit(alpha, RADAR, members=2, steps=3, seed=1234).json()
        assert wait_status(alpha, job["id"])["status"] == "successful"
        forecasts.append(alpha.get(f"/v1/nowcasts/{job['id']}/result").content)
    other = submit(alpha, RADAR, members=2, steps=3, seed=99).json()
    assert wait_status(alpha, other["id"])["status"] == "successful"
    forecasts.append(alpha.get(f"/v1/nowcasts/{other['id']}/result").content)
    precip = [forecast_precip(data) for data in forecasts]
    np.testing.assert_array_equal(precip[0], precip[1])
    assert not np.array_equal(precip[0], precip[2], equal_nan=True)


def test_cancel_running_job(alpha: httpx.Client, cluster: Cluster) -> None:
    job = submit(alpha, RADAR, members=1, steps=1000, seed=3).json()
    running = wait_for(
        lambda: (j := alpha.get(f"/v1/nowcasts/{job['id']}").json())["progress"]["step"] > 0 and j,
        60,
        "the long job to run",
    )
    assert running["status"] == "running"
    cancelled_at = time.monotonic()
    response = alpha.delete(f"/v1/nowcasts/{job['id']}")
    assert response.status_code == 200 and response.json()["cancel_requested"]
    final = wait_status(alpha, job["id"], timeout_s=30)
    elapsed = time.monotonic() - cancelled_at
    assert final["status"] == "dismissed"
    # one sampler step of this job takes well under a second; polling adds <= 0.2 s
    assert elapsed < 5, f"dismissed only after {elapsed:.1f} s"
    assert final["progress"]["step"] < 1000
    assert alpha.get(f"/v1/nowcasts/{job['id']}/result").json()["code"] == "no-result"


def test_tenants_are_isolated(alpha: httpx.Client, beta: httpx.Client) -> None:
    job = submit(alpha, RADAR, members=1, steps=2, seed=5).json()
    for method, path in (
        ("GET", ""),
        ("GET", "/result"),
        ("GET", "/events"),
        ("DELETE", ""),
    ):
        response = beta.request(method, f"/v1/nowcasts/{job['id']}{path}")
        assert response.status_code == 404, (method, path)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "job-not-found"
    assert job["id"] not in [j["id"] for j in beta.get("/v1/nowcasts").json()["items"]]
    listed = alpha.get("/v1/nowcasts", params={"limit": 100}).json()
    assert job["id"] in [j["id"] for j in listed["items"]]
    assert wait_status(alpha, job["id"])["status"] == "successful"  # beta's DELETE changed nothing


def test_auth_required(cluster: Cluster) -> None:
    no_key = httpx.post(
        f"{cluster.url}/v1/nowcasts",
        content=RADAR,
        headers={"Content-Type": "application/x-netcdf"},
    )
    assert no_key.status_code == 401
    assert no_key.headers["www-authenticate"].startswith("Bearer")
    assert no_key.json()["code"] == "missing-api-key"
    wrong = httpx.get(
        f"{cluster.url}/v1/nowcasts", headers={"Authorization": f"Bearer {KEY_A[:-1]}x"}
    )
    assert wrong.status_code == 401 and wrong.json()["code"] == "invalid-api-key"


def test_idempotency_key(alpha: httpx.Client) -> None:
    headers = {"Content-Type": "application/x-netcdf", "Idempotency-Key": "order-42"}
    first = alpha.post("/v1/nowcasts", params={"steps": 2}, content=RADAR, headers=headers)
    again = alpha.post("/v1/nowcasts", params={"steps": 2}, content=RADAR, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    other = alpha.post("/v1/nowcasts", params={"steps": 3}, content=RADAR, headers=headers)
    assert other.status_code == 422 and other.json()["code"] == "idempotency-key-reused"


def test_multipart_submit(alpha: httpx.Client) -> None:
    response = alpha.post(
        "/v1/nowcasts",
        files={"radar": ("radar.nc", RADAR, "application/x-netcdf")},
        data={"params": '{"members": 2, "steps": 2, "seed": 8, "products": ["mean"]}'},
    )
    assert response.status_code == 202, response.text
    params = response.json()["params"]
    assert (params["members"], params["seed"], params["products"]) == (2, 8, ["mean"])
    assert wait_status(alpha, response.json()["id"])["status"] == "successful"


def test_oversized_body_413(alpha: httpx.Client) -> None:
    big = RADAR + b"\0" * SHARED_MAX_BODY_BYTES
    declared = submit(alpha, big)
    assert declared.status_code == 413 and declared.json()["code"] == "body-too-large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for start in range(0, len(big), 16_384):
            yield big[start : start + 16_384]

    streamed = alpha.post(
        "/v1/nowcasts", content=chunks(), headers={"Content-Type": "application/x-netcdf"}
    )
    assert streamed.status_code == 413
    assert streamed.headers["content-type"] == "application/problem+json"


def test_broken_file_answers_4xx(alpha: httpx.Client) -> None:
    not_netcdf = submit(alpha, b"<html>surely not radar</html>")
    assert 400 <= not_netcdf.status_code < 500
    body = not_netcdf.json()
    assert not_netcdf.headers["content-type"] == "application/problem+json"
    assert body["status"] == not_netcdf.status_code and body["detail"]
    bad_params = submit(alpha, RADAR, members=500)
    assert bad_params.status_code == 422 and "members" in bad_params.json()["detail"]
    wrong_type = alpha.post("/v1/nowcasts", content=RADAR, headers={"Content-Type": "text/csv"})
    assert wrong_type.status_code == 415


def test_result_not_ready_and_unknown(alpha: httpx.Client) -> None:
    job = submit(alpha, RADAR, members=1, steps=300, seed=4).json()
    early = alpha.get(f"/v1/nowcasts/{job['id']}/result")
    assert early.status_code == 404 and early.json()["code"] == "result-not-ready"
    alpha.delete(f"/v1/nowcasts/{job['id']}")
    unknown = alpha.get("/v1/nowcasts/00000000-0000-4000-8000-000000000000")
    assert unknown.status_code == 404 and unknown.json()["code"] == "job-not-found"


def test_expired_result_answers_410(alpha: httpx.Client, cluster: Cluster, redis_url: str) -> None:
    job = submit(alpha, RADAR, members=1, steps=2, seed=6).json()
    assert wait_status(alpha, job["id"])["status"] == "successful"
    prefix = cluster.env["NOWCAST_REDIS_KEY_PREFIX"]
    db = redis.Redis.from_url(redis_url)
    # let the result's lifetime (kept in the job record; the bytes are in the blob store) end now
    db.hset(f"{prefix}:job:{job['id']}", "result_expires_ms", 1)
    gone = alpha.get(f"/v1/nowcasts/{job['id']}/result")
    assert gone.status_code == 410 and gone.json()["code"] == "result-expired"
    assert alpha.get(f"/v1/nowcasts/{job['id']}").json()["status"] == "successful"


def test_models_and_metrics(alpha: httpx.Client, cluster: Cluster) -> None:
    model = alpha.get("/v1/models").json()["models"][0]
    assert (model["frames_in"], model["frames_out"], model["interval_s"]) == (7, 6, 300)
    assert model["grid"]["factor_px"] == 16 and "mean_intensity" in model["constraint_types"]
    assert httpx.get(f"{cluster.url}/metrics").status_code == 401  # auth is on: key needed
    metrics = alpha.get("/metrics").text
    assert "nowcast_jobs_submitted_total" in metrics
    assert 'nowcast_jobs_finished_total{outcome="successful"}' in metrics
    assert "nowcast_workers_alive 2.0" in metrics
    assert "nowcast_run_seconds_count" in metrics


def test_openapi_documents_every_endpoint(cluster: Cluster) -> None:
    spec = httpx.get(f"{cluster.url}/openapi.json").json()
    paths = spec["paths"]
    assert set(paths["/v1/nowcasts"]) == {"get", "post"}
    assert set(paths["/v1/nowcasts/{job_id}"]) == {"get", "delete"}
    for path in ("events", "result"):
        assert "get" in paths[f"/v1/nowcasts/{{job_id}}/{path}"]
    for path in ("/v1/models", "/healthz", "/readyz", "/metrics"):
        assert "get" in paths[path]
    body = paths["/v1/nowcasts"]["post"]["requestBody"]["content"]
    assert {"application/x-netcdf", "multipart/form-data"} <= set(body)
    assert httpx.get(f"{cluster.url}/docs").status_code == 200
    assert httpx.put(f"{cluster.url}/healthz").json()["code"] == "method-not-allowed"
