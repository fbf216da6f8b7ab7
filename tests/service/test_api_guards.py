"""What the API refuses before it reaches the store: malformed job ids, /metrics without a key.

The app runs in-process (FastAPI's TestClient) on a real Redis under a fresh key prefix; no
worker and no model weights are needed, only the model's metadata.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.queue.constants import JobStatus
from service.queue.redis_store import RedisJobStore
from service.queue.store import JobStore, QueuePolicy
from service.settings import SHIPPED_MODEL_DIR, Settings
from tests.support.cluster import write_keys_file
from tests.support.stores import job_store, make_job

KEY_ALPHA = "key-alpha-0123456789abcdef"
JOB_OPERATIONS = (("GET", ""), ("GET", "/events"), ("GET", "/result"), ("DELETE", ""))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped model's folder (the API reads only its metadata), or a tiny random one."""
    if (SHIPPED_MODEL_DIR / "model.yaml").is_file():
        return SHIPPED_MODEL_DIR
    from models.bundle import create_random_model_dir

    folder = tmp_path_factory.mktemp("model") / "tiny"
    return create_random_model_dir(folder, "tiny", seed=0, export_onnx=False)


@pytest.fixture()
def store(redis_url: str) -> Iterator[RedisJobStore]:
    with job_store("redis", redis_url, QueuePolicy()) as opened:
        assert isinstance(opened, RedisJobStore)
        yield opened


def make_app(store: JobStore, model_dir: Path, keys_file: Path | None) -> FastAPI:
    settings = Settings(model_dir=model_dir, redis_url=None, api_keys_file=keys_file)
    return create_app(settings, store=store)


@pytest.fixture()
def alpha(store: RedisJobStore, model_dir: Path, tmp_path: Path) -> TestClient:
    """Tenant alpha's client on an app with auth on; a 500 comes back as a response."""
    keys = write_keys_file(tmp_path / "keys.json", {KEY_ALPHA: "alpha"})
    return TestClient(
        make_app(store, model_dir, keys),
        raise_server_exceptions=False,
        headers={"Authorization": f"Bearer {KEY_ALPHA}"},
    )


def test_malformed_job_ids_answer_like_unknown_jobs(
    alpha: TestClient, store: RedisJobStore
) -> None:
    accepted = store.submit(make_job("alpha"), b"radar").job  # leaves `<id>:input` in Redis
    finished = store.submit(make_job("alpha"), b"radar").job
    (first, second) = store.claim("w", count=2, block_s=0.5)
    delivery = first if first.job_id == finished.id else second
    store.start(delivery, "w")
    assert store.complete(delivery, b"forecast").status is JobStatus.SUCCESSFUL  # `<id>:result`
    malformed = [
        f"{accepted.id}:input",
        f"{finished.id}:result",
        accepted.id.upper(),
        accepted.id.replace("-", ""),
        f"{accepted.id}0",
        "not-a-job",
        "x" * 300,
    ]
    unknown = str(uuid.uuid4())
    for method, suffix in JOB_OPERATIONS:
        expected = alpha.request(method, f"/v1/nowcasts/{unknown}{suffix}")
        assert expected.status_code == 404 and expected.json()["code"] == "job-not-found"
        for job_id in malformed:
            response = alpha.request(method, f"/v1/nowcasts/{job_id}{suffix}")
            where = (method, job_id, suffix, response.text)
            assert response.status_code == 404, where
            assert response.headers["content-type"] == "application/problem+json", where
            body = expected.json()
            assert response.json() == {**body, "detail": body["detail"].replace(unknown, job_id)}
    # the well-formed ids still work, and nothing above touched the jobs
    assert alpha.get(f"/v1/nowcasts/{accepted.id}").json()["status"] == "accepted"
    assert alpha.get(f"/v1/nowcasts/{finished.id}/result").content == b"forecast"


def test_metrics_need_an_api_key_when_auth_is_on(alpha: TestClient) -> None:
    anonymous = TestClient(alpha.app)
    missing = anonymous.get("/metrics")
    assert missing.status_code == 401
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.json()["code"] == "missing-api-key"
    wrong = anonymous.get("/metrics", headers={"Authorization": f"Bearer {KEY_ALPHA}x"})
    assert wrong.status_code == 401 and wrong.json()["code"] == "invalid-api-key"
    allowed = alpha.get("/metrics")
    assert allowed.status_code == 200 and "nowcast_workers_alive" in allowed.text


def test_metrics_stay_open_when_auth_is_off(store: RedisJobStore, model_dir: Path) -> None:
    anonymous = TestClient(make_app(store, model_dir, keys_file=None))
    response = anonymous.get("/metrics")
    assert response.status_code == 200 and "nowcast_workers_alive" in response.text
