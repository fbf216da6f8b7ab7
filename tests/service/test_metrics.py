"""`/metrics` of a real API process (uvicorn, Redis): submissions apart from outcomes, HTTP
request durations by route template, process metrics and the build info (issue 12, item 6)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cluster import RADAR_64, Cluster, deployment, submit

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, tiny_model_dir: Path
) -> Iterator[Cluster]:
    # the API alone: submitted jobs stay queued until the test dismisses them
    with deployment(tmp_path_factory.mktemp("metrics"), redis_url, model_dir=tiny_model_dir) as (
        cluster,
        _probe,
    ):
        cluster.start_api(workers=0)
        yield cluster


def scrape(client: httpx.Client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_submissions_and_outcomes_are_separate_counters(api: Cluster) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as client:
        before = scrape(client)
        job = submit(client, RADAR_64.read_bytes(), members=2, steps=2)
        assert job.status_code == 202
        assert client.delete(f"/v1/nowcasts/{job.json()['id']}").status_code == 200
        after = scrape(client)

    assert value(after, "nowcast_jobs_submitted_total") == (
        value(before, "nowcast_jobs_submitted_total") + 1
    )
    dismissed = "nowcast_jobs_finished_total"
    assert value(after, dismissed, outcome="dismissed") == (
        value(before, dismissed, outcome="dismissed") + 1
    )
    # no outcome called "submitted": summing the outcomes counts each finished job once
    outcomes = {dict(labels)["outcome"] for name, labels in after if name == dismissed}
    assert outcomes == {"successful", "failed", "dismissed", "dead_lettered"}
    assert not any(name == "nowcast_jobs_total" for name, _ in after)


def test_http_durations_by_route_template_and_status(api: Cluster) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    with httpx.Client(base_url=api.url, timeout=30) as client:
        before = scrape(client)
        for _ in range(3):
            assert client.get(f"/v1/nowcasts/{missing}").status_code == 404
        assert client.get("/v1/models").status_code == 200
        assert client.get("/no/such/path/12345").status_code == 404
        after = scrape(client)

    count = "nowcast_http_request_duration_seconds_count"
    job_route = {"method": "GET", "route": "/v1/nowcasts/{job_id}", "status": "404"}
    assert value(after, count, **job_route) == value(before, count, **job_route) + 3
    models = {"method": "GET", "route": "/v1/models", "status": "200"}
    assert value(after, count, **models) == value(before, count, **models) + 1
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert value(after, count, **unmatched) == value(before, count, **unmatched) + 1
    assert value(after, "nowcast_http_request_duration_seconds_sum", **models) > 0
    # the scrape itself is timed too, and no raw path ever becomes a label value
    routes = {dict(labels).get("route") for name, labels in after if name == count}
    assert "/metrics" in routes
    assert not any(missing in route or "12345" in route for route in routes if route)


def test_process_metrics_and_build_info(api: Cluster) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as client:
        model = client.get("/v1/models").json()["models"][0]
        first = scrape(client)
        client.get("/healthz")
        second = scrape(client)

    assert value(second, "process_resident_memory_bytes") > 0
    assert value(second, "process_start_time_seconds") > 0
    assert value(second, "process_cpu_seconds_total") >= value(first, "process_cpu_seconds_total")
    assert any(name == "python_info" for name, _ in second)
    build = [
        dict(labels)
        for (name, labels), number in second.items()
        if name == "nowcast_build_info" and number == 1
    ]
    assert len(build) == 1
    assert build[0]["model_name"] == model["name"]
    assert build[0]["model_version"] == model["version"]
    assert build[0]["version"]
