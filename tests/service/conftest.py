"""Fixtures of the service tests: a real Redis, real uvicorn and worker subprocesses."""

from __future__ import annotations

import os

import pytest
import redis

REDIS_URL = os.environ.get("NOWCAST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the test Redis; every test uses its own key prefix on it."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.fail(
            f"no Redis at {REDIS_URL} ({exc}); start one with "
            "`redis-server --daemonize yes --port 6379 --save '' --appendonly no` "
            "or run `bash .ci/run`"
        )
    return REDIS_URL
