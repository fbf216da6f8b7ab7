"""OGC API - Processes over HTTP: OWSLib's client and the standard's schemas against a real
uvicorn, a real Redis and a real worker process (tiny random model, auth on, two tenants).

Every JSON document the OGC routes answer is validated against the standard's schemas
(tests/support/ogc_schemas.py); OWSLib reads the landing page, conformance and processes and
executes the process; its status is then followed through the links the documents give.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import netCDF4
import pytest

from tests.support.cluster import (
    KEY_A,
    KEY_B,
    RADAR_64,
    Cluster,
    submit,
    wait_for,
)
from tests.support.ogc_schemas import validate

pytestmark = pytest.mark.integration

processes_module = pytest.importorskip("owslib.ogcapi.processes", reason="OWSLib (test extra)")

RADAR = RADAR_64.read_bytes()
OGC_CONF = "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/"
OGC_EXCEPTION = "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/"
RESULTS_REL = "http://www.opengis.net/def/rel/ogc/1.0/results"


def _execute_body(**inputs: Any) -> dict[str, Any]:
    radar = {
        "value": base64.b64encode(RADAR).decode(),
        "mediaType": "application/x-netcdf",
        "encoding": "base64",
    }
    return {"inputs": {"radar": radar, **inputs}}


def _link(document: dict[str, Any], rel: str) -> str:
    return next(link["href"] for link in document["links"] if link["rel"] == rel)


def test_owslib_executes_the_process_and_documents_match_the_schemas(
    cluster: Cluster, alpha: httpx.Client, tmp_path: Path
) -> None:
    ogc = processes_module.Processes(
        f"{cluster.url}/ogc", headers={"Authorization": f"Bearer {KEY_A}"}
    )
    validate("landingPage", ogc.response)
    rels = {link["rel"] for link in ogc.links}
    assert {"service-desc", "http://www.opengis.net/def/rel/ogc/1.0/job-list"} <= rels
    assert httpx.get(_link(ogc.response, "service-desc")).json()["paths"]["/ogc/jobs"]

    conformance = ogc.conformance()
    validate("confClasses", conformance)
    assert {f"{OGC_CONF}core", f"{OGC_CONF}job-list"} <= set(conformance["conformsTo"])

    assert [process["id"] for process in ogc.processes()] == ["nowcast"]
    validate("processList", alpha.get("/ogc/processes").json())
    description = ogc.process("nowcast")
    validate("process", description)
    assert description["inputs"]["radar"]["schema"]["contentMediaType"] == "application/x-netcdf"
    assert description["outputs"]["forecast"]["schema"]["contentMediaType"].endswith("netcdf")

    inputs = _execute_body(members=2, steps=2, seed=5)["inputs"]
    status = ogc.execute("nowcast", inputs=inputs, async_=True)
    validate("statusInfo", status)
    assert status["status"] == "accepted" and status["processID"] == "nowcast"
    location = ogc.response_headers["Location"]
    assert location.endswith(f"/ogc/jobs/{status['jobID']}")
    assert ogc.response_headers["Preference-Applied"] == "respond-async"

    seen: list[dict[str, Any]] = []

    def finished() -> dict[str, Any] | None:
        document = alpha.get(location).json()
        validate("statusInfo", document)
        seen.append(document)
        return document if document["status"] in ("successful", "failed") else None

    final = wait_for(finished, 120, "the OGC job to finish", interval_s=0.2)
    assert final["status"] == "successful", final
    assert final["progress"] == 100 and "finished" in final and "started" in final
    assert all(0 <= document["progress"] <= 100 for document in seen)

    job_list = alpha.get("/ogc/jobs").json()
    validate("jobList", job_list)
    assert status["jobID"] in {job["jobID"] for job in job_list["jobs"]}
    # the same job through /v1/nowcasts, with the parameters the execute request gave
    v1 = alpha.get(f"/v1/nowcasts/{status['jobID']}").json()
    assert (v1["params"]["members"], v1["params"]["seed"]) == (2, 5)

    result = alpha.get(_link(final, RESULTS_REL))
    assert result.status_code == 200
    assert result.headers["content-type"] == "application/x-netcdf"
    with netCDF4.Dataset("forecast.nc", memory=result.content) as ds:
        assert ds["precip"].shape[0] == 2


def test_without_prefer_it_still_runs_asynchronously(alpha: httpx.Client) -> None:
    response = alpha.post(
        "/ogc/processes/nowcast/execution", json=_execute_body(members=1, steps=1)
    )
    assert response.status_code == 201, response.text
    assert "Preference-Applied" not in response.headers
    assert response.headers["Location"].endswith(response.json()["jobID"])
    validate("statusInfo", response.json())


def test_jobs_are_per_tenant_and_dismissable(alpha: httpx.Client, cluster: Cluster) -> None:
    job_id = submit(alpha, RADAR, members=1, steps=200).json()["id"]  # long enough to dismiss
    with cluster.client(KEY_B) as beta:
        for method in ("GET", "DELETE"):
            other = beta.request(method, f"/ogc/jobs/{job_id}")
            assert other.status_code == 404
            validate("exception", other.json())
            assert other.json()["type"] == f"{OGC_EXCEPTION}no-such-job"
        assert job_id not in {job["jobID"] for job in beta.get("/ogc/jobs").json()["jobs"]}
    not_ready = alpha.get(f"/ogc/jobs/{job_id}/results")
    assert not_ready.status_code == 404
    assert not_ready.json()["type"] == f"{OGC_EXCEPTION}result-not-ready"

    dismissed = alpha.delete(f"/ogc/jobs/{job_id}")
    assert dismissed.status_code == 200
    validate("statusInfo", dismissed.json())

    def gone() -> bool:
        return alpha.get(f"/v1/nowcasts/{job_id}").json()["status"] == "dismissed"

    wait_for(gone, 60, "the dismissed job to stop")
    listed = alpha.get("/ogc/jobs", params={"status": "dismissed"}).json()
    validate("jobList", listed)
    assert job_id in {job["jobID"] for job in listed["jobs"]}
    assert {job["status"] for job in listed["jobs"]} == {"dismissed"}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "type_end"),
    [
        ("GET", "/ogc/processes/forecast", None, 404, "no-such-process"),
        ("POST", "/ogc/processes/forecast/execution", {"inputs": {}}, 404, "no-such-process"),
        ("GET", "/ogc/jobs/not-a-job", None, 404, "no-such-job"),
        ("POST", "/ogc/processes/nowcast/execution", {"inputs": {}}, 400, "missing-radar-input"),
        (
            "POST",
            "/ogc/processes/nowcast/execution",
            {"inputs": {"radar": {"href": "http://example.org/radar.nc"}}},
            400,
            "reference-input-not-supported",
        ),
        (
            "POST",
            "/ogc/processes/nowcast/execution",
            {"inputs": {"radar": "bm90IE5ldENERg==", "membrs": 4}},
            400,
            "unknown-inputs",
        ),
        ("GET", "/ogc/jobs?limits=5", None, 422, "unknown-query-parameters"),
    ],
)
def test_errors_are_exception_documents(
    alpha: httpx.Client, method: str, path: str, body: Any, status: int, type_end: str
) -> None:
    response = alpha.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    validate("exception", response.json())
    assert response.json()["type"].endswith(type_end)


def test_execution_and_jobs_need_a_key_discovery_does_not(cluster: Cluster) -> None:
    assert httpx.get(f"{cluster.url}/ogc/processes/nowcast").status_code == 200
    assert httpx.get(f"{cluster.url}/ogc/jobs").status_code == 401
    response = httpx.post(f"{cluster.url}/ogc/processes/nowcast/execution", json=_execute_body())
    assert response.status_code == 401
