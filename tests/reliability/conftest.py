"""Fixtures of the reliability tests (`redis_url` and `tiny_model_dir` are in tests/conftest.py).

- `guarded`: one API + one worker with API keys for three tenants and a request-size limit, for
  the hostile-input and security tests; its logs are grepped for keys and payload at the end.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.cluster import Cluster, deployment, write_keys_file
from tests.support.queue_probe import QueueProbe

MAX_BODY_BYTES = 32 * 1024 * 1024


@dataclass
class Guarded:
    """A running fleet with auth on: keys by tenant name, and a queue probe of its prefix."""

    fleet: Cluster
    probe: QueueProbe
    keys: dict[str, str]  # tenant -> API key
    max_body_bytes: int

    def client(self, tenant: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[tenant]}"} if tenant else {}
        return httpx.Client(base_url=self.fleet.url, headers=headers, timeout=30)


@pytest.fixture(scope="session")
def guarded(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, tiny_model_dir: Path
) -> Iterator[Guarded]:
    tmp = tmp_path_factory.mktemp("guarded")
    # fresh random keys, so that finding one in a log cannot be a coincidence
    keys = {tenant: secrets.token_urlsafe(32) for tenant in ("alpha", "beta", "corpus")}
    keys_file = write_keys_file(tmp / "keys.json", {key: tenant for tenant, key in keys.items()})
    with deployment(
        tmp,
        redis_url,
        model_dir=tiny_model_dir,
        api_keys_file=keys_file,
        max_body_bytes=MAX_BODY_BYTES,
        max_queue_length=1000,
        worker_poll_s=0.5,
        progress_interval_s=0.1,
        sse_poll_interval_s=0.1,
        log_level="DEBUG",  # the strictest case for "no key or payload in logs"
    ) as (fleet, probe):
        fleet.start(workers=1)
        yield Guarded(fleet, probe, keys, MAX_BODY_BYTES)
