"""The OpenAPI document is good enough for a generated client, and query parameters are strict.

`openapi-python-client` generates a client from the `/openapi.json` of a real server (uvicorn,
Redis, two workers, tiny random model, auth on); the generated client alone then submits the raw
radar NetCDF, polls the job and downloads the forecast. The document itself is checked for what
generators rely on: short unique operation ids, problem+json schemas on errors, auth as
configured.
"""

from __future__ import annotations

import importlib
import io
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import netCDF4
import pytest

from service.api.app import create_app
from service.api.schemas import MAX_SEED
from service.settings import Settings
from tests.support.cluster import (
    KEY_A,
    RADAR_64,
    Cluster,
    submit,
    wait_for,
)

pytestmark = pytest.mark.integration

RADAR = RADAR_64.read_bytes()
PACKAGE = "nowcast_generated_client"


@pytest.fixture(scope="module")
def spec(cluster: Cluster) -> dict[str, Any]:
    return httpx.get(f"{cluster.url}/openapi.json").json()


def _generator() -> str:
    found = shutil.which("openapi-python-client") or str(
        Path(sys.executable).parent / "openapi-python-client"
    )
    if not Path(found).exists():
        pytest.skip("openapi-python-client is not installed (the `test` extra)")
    return found


@pytest.fixture(scope="module")
def generated(
    spec: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SimpleNamespace]:
    """The generated client package, imported from a tmp folder."""
    generator = _generator()
    tmp = tmp_path_factory.mktemp("generated")
    (tmp / "openapi.json").write_text(json.dumps(spec))
    run = subprocess.run(
        [generator, "generate", "--path", "openapi.json", "--output-path", PACKAGE]
        + ["--meta", "none"],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    sys.path.insert(0, str(tmp))
    try:
        yield SimpleNamespace(
            client=importlib.import_module(f"{PACKAGE}.client"),
            types=importlib.import_module(f"{PACKAGE}.types"),
            nowcasts={
                name: importlib.import_module(f"{PACKAGE}.api.nowcasts.{name}")
                for name in ("submit_nowcast", "get_nowcast", "get_nowcast_result")
            },
        )
    finally:
        sys.path.remove(str(tmp))
        for name in [name for name in sys.modules if name.startswith(PACKAGE)]:
            del sys.modules[name]


def test_generated_client_submits_polls_and_downloads(
    generated: SimpleNamespace, cluster: Cluster
) -> None:
    ops, File = generated.nowcasts, generated.types.File  # noqa: N806 - the generated class
    client = generated.client.AuthenticatedClient(base_url=cluster.url, token=KEY_A)
    with client:
        body = File(payload=io.BytesIO(RADAR), file_name="radar.nc")
        job = ops["submit_nowcast"].sync(
            client=client, body=body, members=2, steps=2, seed=MAX_SEED
        )
        assert type(job).__name__ == "JobOut", job
        assert job.params.seed == MAX_SEED

        def done() -> Any:
            polled = ops["get_nowcast"].sync(job.id, client=client)
            return polled if str(polled.status) in ("successful", "failed") else None

        final = wait_for(done, 120, f"job {job.id} via the generated client")
        assert str(final.status) == "successful", final
        result = ops["get_nowcast_result"].sync(job.id, client=client)
        assert isinstance(result, File), result
        with netCDF4.Dataset("forecast.nc", memory=result.payload.read()) as ds:
            assert ds["precip"].shape[0] == 2

        # a seed the service draws fits a JavaScript number too (a draw below 2^63 would fall
        # under 2^53 with a chance of only 2^-10)
        drawn = ops["submit_nowcast"].sync(
            client=client, body=File(payload=io.BytesIO(RADAR)), members=1, steps=1
        )
        assert 0 <= drawn.params.seed <= MAX_SEED


@pytest.mark.parametrize(
    ("method", "params", "unknown"),
    [
        ("POST", {"membrs": 4}, ["membrs"]),
        ("POST", {"members": 2, "seeed": 1, "stength": 3}, ["seeed", "stength"]),
        ("GET", {"limit": 5, "ofset": 10}, ["ofset"]),
    ],
)
def test_unknown_query_parameters_answer_422_naming_them(
    cluster: Cluster, method: str, params: dict[str, Any], unknown: list[str]
) -> None:
    with httpx.Client(base_url=cluster.url, headers={"Authorization": f"Bearer {KEY_A}"}) as client:
        if method == "POST":
            response = submit(client, RADAR, **params)
        else:
            response = client.get("/v1/nowcasts", params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == "unknown-query-parameters"
    assert [error["field"] for error in problem["errors"]] == [f"query.{n}" for n in unknown]
    assert all(name in problem["detail"] for name in unknown)


def test_seeds_past_2_to_the_53_and_a_lone_strength_are_refused(cluster: Cluster) -> None:
    with httpx.Client(base_url=cluster.url, headers={"Authorization": f"Bearer {KEY_A}"}) as client:
        too_big = submit(client, RADAR, seed=MAX_SEED + 1)
        lone_strength = submit(client, RADAR, strength=3)
    assert too_big.status_code == 422 and "seed" in too_big.json()["detail"]
    assert lone_strength.status_code == 422 and "target_mm_h" in lone_strength.json()["detail"]


def test_spec_has_short_ids_problem_schemas_and_auth_as_configured(
    spec: dict[str, Any], tiny_model_dir: Path
) -> None:
    operations = [op for item in spec["paths"].values() for op in item.values()]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids))
    assert {"submit_nowcast", "get_nowcast", "get_nowcast_result", "execute_process"} <= set(ids)
    assert all(len(op_id) <= 30 and "_v1_" not in op_id for op_id in ids), ids

    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "Problem" in schemas
    for op in operations:
        for status, response in op["responses"].items():
            if status[0] in "45":
                content = response["content"]
                assert list(content) == ["application/problem+json"], (op["operationId"], status)
                assert content["application/problem+json"]["schema"]["$ref"].endswith("/Problem")
    submit_op = spec["paths"]["/v1/nowcasts"]["post"]
    raw = submit_op["requestBody"]["content"]
    assert {"application/x-netcdf", "application/octet-stream", "multipart/form-data"} <= set(raw)
    result = spec["paths"]["/v1/nowcasts/{job_id}/result"]["get"]["responses"]["200"]
    assert result["content"]["application/x-netcdf"]["schema"]["format"] == "binary"
    seed = next(p for p in submit_op["parameters"] if p["name"] == "seed")
    assert str(MAX_SEED) in seed["description"]

    # auth on here: the bearer scheme is declared and required by the job operations
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    assert submit_op["security"] == [{"HTTPBearer": []}]
    # auth off: no scheme, no security requirement, no 401 anywhere
    open_spec = create_app(Settings(model_dir=tiny_model_dir, redis_url=None)).openapi()
    assert "securitySchemes" not in open_spec.get("components", {})
    for item in open_spec["paths"].values():
        for op in item.values():
            assert "security" not in op and "401" not in op["responses"], op["operationId"]
