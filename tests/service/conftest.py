"""`cluster`: the two-tenant cluster the HTTP, OGC, OpenAPI-client and dashboard tests share.

One real uvicorn API, two real worker processes and a real Redis prefix for the whole session:
starting it once instead of once per module saves the start-ups in CI. Its tests only look at
their own jobs, so they do not see one another's. Modules that need other settings start their
own (`tests.support.cluster.deployment`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.cluster import (
    KEY_A,
    KEY_B,
    SHARED_MAX_BODY_BYTES,
    Cluster,
    deployment,
    write_keys_file,
)


@pytest.fixture(scope="session")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, tiny_model_dir: Path
) -> Iterator[Cluster]:
    """Tenants `alpha` (KEY_A) and `beta` (KEY_B), auth on, the tiny random model."""
    tmp = tmp_path_factory.mktemp("two-tenants")
    keys = write_keys_file(tmp / "keys.json", {KEY_A: "alpha", KEY_B: "beta"})
    with deployment(
        tmp,
        redis_url,
        model_dir=tiny_model_dir,
        api_keys_file=keys,
        max_body_bytes=SHARED_MAX_BODY_BYTES,
        progress_interval_s=0.1,
        sse_poll_interval_s=0.1,
        worker_poll_s=0.5,
        worker_batch_size=4,
    ) as (running, _probe):
        running.start(workers=2)
        yield running


@pytest.fixture()
def alpha(cluster: Cluster) -> Iterator[httpx.Client]:
    with cluster.client(KEY_A) as client:
        yield client


@pytest.fixture()
def beta(cluster: Cluster) -> Iterator[httpx.Client]:
    with cluster.client(KEY_B) as client:
        yield client
