"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REDIS_URL = os.environ.get("NOWCAST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete `tiny` model folder with seeded random weights and the ONNX codec.

    Built once per test session (the ONNX export takes ~20 s on a busy 2-core machine); treat it
    as read-only: copy it (`shutil.copytree`) before changing anything in it.
    """
    from models.bundle import create_random_model_dir

    return create_random_model_dir(tmp_path_factory.mktemp("models") / "tiny", "tiny", seed=0)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the test Redis (tests/service, tests/reliability); every test uses its own key
    prefix on it."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.fail(
            f"no Redis at {REDIS_URL} ({exc}); start one with "
            "`redis-server --daemonize yes --port 6379 --save '' --appendonly no` "
            "or run `bash .ci/run`"
        )
    return REDIS_URL
