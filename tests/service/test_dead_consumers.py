"""Dead workers' names leave the queue's consumer group; live ones and those holding jobs stay."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

from models.config import get_config
from service.queue.constants import CONSUMER_GROUP
from service.queue.redis_store import RedisJobStore
from service.queue.store import QueuePolicy
from tests.service.test_worker_store import StandInPipeline, make_worker
from tests.support.cluster import wait_for
from tests.support.stores import make_job


def consumers(store: RedisJobStore) -> set[str]:
    return {
        c["name"].decode() for c in store.client.xinfo_consumers(store.keys.stream, CONSUMER_GROUP)
    }


def make_store(redis_url: str) -> RedisJobStore:
    policy = QueuePolicy(lease_s=0.3, dead_consumer_idle_s=0.5)
    return RedisJobStore.from_url(redis_url, f"nowcast-test-{uuid.uuid4().hex}", policy)


def test_idle_consumers_without_jobs_are_removed(redis_url: str) -> None:
    store = make_store(redis_url)
    try:
        store.submit(make_job(seed=1), b"radar")
        store.submit(make_job(seed=2), b"radar")
        (finished,) = store.claim("dead-finished", count=1, block_s=0.2)
        store.start(finished, "dead-finished")
        store.complete(finished, b"forecast")
        store.claim("dead-holding", count=1, block_s=0.2)  # died holding a job
        # alive, nothing to do (a consumer that found the queue empty)
        store.client.xgroup_createconsumer(store.keys.stream, CONSUMER_GROUP, "beating")
        assert consumers(store) == {"dead-finished", "dead-holding", "beating"}
        time.sleep(0.7)
        store.heartbeat("beating")
        assert store.prune_consumers(0.5) == ["dead-finished"]
        # the one holding a job stays until its entry is reclaimed
        assert consumers(store) == {"dead-holding", "beating"}
        assert store.prune_consumers(60) == []
    finally:
        store.delete_all_keys()
        store.close()


def test_live_workers_prune_periodically(redis_url: str, tmp_path: Path) -> None:
    store = make_store(redis_url)
    try:
        store.submit(make_job(), b"radar")
        (delivery,) = store.claim("gone", count=1, block_s=0.2)
        store.start(delivery, "gone")
        store.fail(delivery, "x", "y")  # settled; then the worker died
        assert "gone" in consumers(store)
        worker = make_worker(
            store,
            "alive",
            StandInPipeline(get_config("tiny")),
            tmp_path,
            lease_s=0.3,
            heartbeat_interval_s=0.1,
            dead_consumer_idle_s=0.5,
        )
        beat = threading.Thread(target=worker._heartbeat_loop, daemon=True)
        beat.start()
        try:
            wait_for(lambda: "gone" not in consumers(store), 10, "the dead consumer's removal")
        finally:
            worker._beat_stop.set()
            beat.join(timeout=5)
    finally:
        store.delete_all_keys()
        store.close()
