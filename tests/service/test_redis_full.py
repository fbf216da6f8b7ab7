"""Redis at `maxmemory` (noeviction): submits answer 503 + Retry-After, /readyz says not ready,
the connection stays usable, and all of it recovers once memory is freed.

A private redis-server with a tiny `maxmemory`, a real API process (uvicorn) over HTTP.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import redis

from service.queue.redis_store import RedisJobStore
from service.queue.store import QueuePolicy, StoreFullError
from tests.support.cluster import RADAR_64, Cluster, redis_env, submit
from tests.support.redis_server import RedisServer


def fill(client: redis.Redis) -> None:
    """4 MB of junk, then a `maxmemory` 1 MB below what Redis uses: every write is refused until
    the junk goes (a limit right at the edge would let a write through whenever a client buffer
    is freed)."""
    for index in range(4):
        client.set(f"junk:{index}", b"x" * 1_000_000)
    client.config_set("maxmemory", int(client.info("memory")["used_memory"]) - 1_000_000)
    try:
        client.set("junk:probe", b"x")
    except redis.exceptions.OutOfMemoryError:
        return
    raise AssertionError("Redis took a write past maxmemory")


def test_redis_out_of_memory_is_503_and_not_ready(tmp_path: Path, tiny_model_dir: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    env, prefix = redis_env(server.url, model_dir=tiny_model_dir)
    cluster = Cluster(tmp_path, env)
    raw = redis.Redis.from_url(server.url)
    store = RedisJobStore.from_url(server.url, prefix, QueuePolicy())
    try:
        cluster.start_api()
        store.heartbeat("stand-in-worker")  # /readyz needs a live worker
        with httpx.Client(base_url=cluster.url, timeout=30) as client:
            assert client.get("/readyz").status_code == 200
            fill(raw)
            try:
                store.check_writable()
                raise AssertionError("check_writable passed at maxmemory")
            except StoreFullError:
                pass

            refused = submit(client, RADAR_64.read_bytes())
            assert refused.status_code == 503, refused.text
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.json()["code"] == "store-full"
            assert int(refused.headers["Retry-After"]) > 0
            # the same keep-alive connection answers the next request
            assert client.get("/healthz").status_code == 200
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["code"] == "store-full"
            assert "Retry-After" in ready.headers

            for key in raw.scan_iter("junk:*"):
                raw.delete(key)
            store.heartbeat("stand-in-worker")
            assert client.get("/readyz").status_code == 200
            accepted = submit(client, RADAR_64.read_bytes())
            assert accepted.status_code == 202, accepted.text
        assert "Traceback" not in cluster.logs()
    finally:
        cluster.stop()
        store.close()
        raw.close()
        server.stop()
