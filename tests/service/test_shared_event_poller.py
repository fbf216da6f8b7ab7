"""Event streams share one poller per API process: N streams on a job cost one Redis read per
poll interval, not N; every stream still sees every change and ends with the job.

A private redis-server (its command counters are this test's alone) and a real API process.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import redis

from tests.support.cluster import RADAR_64, Cluster, redis_env, submit
from tests.support.redis_server import RedisServer

STREAMS = 20
POLL_S = 0.1


def job_reads(client: redis.Redis) -> int:
    """HGETALLs so far: how the API reads a job record."""
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_hgetall", {}).get("calls", 0))


async def follow(url: str, job_id: str, opened: asyncio.Event, counter: list[int]) -> list[str]:
    statuses = []
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(10, read=60)) as client:
        async with client.stream("GET", f"/v1/nowcasts/{job_id}/events") as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    statuses.append(json.loads(line[5:])["status"])
                    counter[0] += 1
                    if counter[0] >= STREAMS:
                        opened.set()
    return statuses


async def scenario(url: str, job_id: str, db: redis.Redis) -> tuple[int, list[list[str]]]:
    opened, counter = asyncio.Event(), [0]
    tasks = [asyncio.create_task(follow(url, job_id, opened, counter)) for _ in range(STREAMS)]
    await asyncio.wait_for(opened.wait(), 30)  # every stream has its first event
    before = job_reads(db)
    await asyncio.sleep(2.0)
    reads = job_reads(db) - before
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        assert (await client.delete(f"/v1/nowcasts/{job_id}")).status_code == 200
    streams = await asyncio.wait_for(asyncio.gather(*tasks), 30)
    return reads, streams


def test_streams_share_one_poller(tmp_path: Path, tiny_model_dir: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    env, _prefix = redis_env(server.url, model_dir=tiny_model_dir, sse_poll_interval_s=POLL_S)
    cluster = Cluster(tmp_path, env)
    db = redis.Redis.from_url(server.url)
    try:
        cluster.start_api()  # no worker: the job waits, its streams stay open
        with httpx.Client(base_url=cluster.url, timeout=30) as client:
            job_id = submit(client, RADAR_64.read_bytes(), members=1).json()["id"]
        started = time.monotonic()
        reads, streams = asyncio.run(scenario(cluster.url, job_id, db))
        assert time.monotonic() - started < 60
        # 2 s at one read per 0.1 s: about 20 for all streams together (one loop per stream: 400)
        assert reads <= 2.0 / POLL_S * 1.5 + 5, reads
        # each stream saw the job waiting, then dismissed, and ended there
        for statuses in streams:
            assert statuses == ["accepted", "dismissed"], statuses
    finally:
        cluster.stop()
        db.close()
        server.stop()
