"""The blob store (inputs and results off Redis): local folder and fsspec `memory://` backends,
and the Redis job store keeping only metadata in Redis."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.blobstore import CHUNK_BYTES, BlobStore, LocalBlobStore, open_blob_store
from service.queue.constants import JobStatus
from service.queue.redis_store import RedisJobStore
from service.queue.store import QueueFullError, QueuePolicy
from tests.support.stores import make_job


@pytest.fixture(params=["local", "memory"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return open_blob_store(str(tmp_path / "blobs"))
    return open_blob_store(f"memory://nowcast-test-{uuid.uuid4().hex}")


def test_put_get_delete(blobs: BlobStore) -> None:
    assert blobs.get("p/results/a") is None and blobs.open_chunks("p/results/a") is None
    blobs.put("p/results/a", b"one")
    blobs.put("p/results/a", b"two")  # put replaces
    assert blobs.get("p/results/a") == b"two"
    blobs.delete("p/results/a")
    blobs.delete("p/results/a")  # absent is fine
    assert blobs.get("p/results/a") is None


def test_put_new_keeps_the_first_blob(blobs: BlobStore) -> None:
    assert blobs.put_new("p/results/a", b"first")
    assert not blobs.put_new("p/results/a", b"second")
    assert blobs.get("p/results/a") == b"first"


def test_download_streams_in_chunks(blobs: BlobStore) -> None:
    data = os.urandom(2 * CHUNK_BYTES + 10)
    blobs.put("p/results/big", data)
    chunks = list(blobs.open_chunks("p/results/big"))
    assert [len(c) for c in chunks] == [CHUNK_BYTES, CHUNK_BYTES, 10]
    assert b"".join(chunks) == data


def test_keys_cannot_leave_the_store(blobs: BlobStore) -> None:
    for key in ("../x", "p/../../x", "/abs", "p//x"):
        with pytest.raises(ValueError):
            blobs.put(key, b"x")


def test_local_writes_are_atomic_and_sweep_follows_the_ttl(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs")
    blobs.put("p/inputs/old", b"x")
    blobs.put("p/inputs/new", b"y")
    blobs.put_new("p/inputs/newer", b"z")
    folder = tmp_path / "blobs" / "p" / "inputs"
    assert sorted(os.listdir(folder)) == ["new", "newer", "old"]  # no temp file left behind
    long_ago = time.time() - 7200
    os.utime(folder / "old", (long_ago, long_ago))
    (folder / ".tmp-crashed").write_bytes(b"half")  # a writer killed mid-write
    os.utime(folder / ".tmp-crashed", (long_ago, long_ago))
    assert blobs.sweep("p/inputs", max_age_s=3600) == 2
    assert sorted(os.listdir(folder)) == ["new", "newer"]
    assert blobs.sweep("p/nothing-here", 1) == 0


def test_fsspec_sweep_follows_the_ttl() -> None:
    blobs = open_blob_store(f"memory://nowcast-test-{uuid.uuid4().hex}")
    blobs.put("p/results/a", b"x")
    assert blobs.sweep("p/results", max_age_s=3600) == 0
    assert blobs.sweep("p/results", max_age_s=-1) == 1
    assert blobs.get("p/results/a") is None


@pytest.fixture
def redis_store(redis_url: str, tmp_path: Path) -> Iterator[RedisJobStore]:
    store = RedisJobStore.from_url(
        redis_url,
        f"nowcast-test-{uuid.uuid4().hex}",
        QueuePolicy(lease_s=5, input_ttl_s=3600, result_ttl_s=3600),
        blob_url=str(tmp_path / "blobs"),
    )
    yield store
    store.delete_all_keys()
    store.close()


def test_redis_holds_no_blob(redis_store: RedisJobStore, tmp_path: Path) -> None:
    radar, forecast = os.urandom(50_000), os.urandom(80_000)
    job = redis_store.submit(make_job(), radar).job
    (delivery,) = redis_store.claim("w", count=1, block_s=0.5)
    redis_store.start(delivery, "w")
    assert redis_store.load_input(job.id) == radar
    redis_store.complete(delivery, forecast)
    assert b"".join(redis_store.open_result(job.id)) == forecast
    # Redis: metadata and queue only, every value small
    client = redis_store.client
    for key in client.scan_iter(match=f"{redis_store.keys.prefix}:*"):
        assert (client.memory_usage(key) or 0) < 20_000, key
    folder = tmp_path / "blobs" / redis_store.keys.prefix
    assert os.listdir(folder / "results") == [job.id]
    assert os.listdir(folder / "inputs") == []  # dropped once the forecast exists

    # the result's lifetime is the job record's: expired there, gone here
    client.hset(redis_store.keys.job(job.id), "result_expires_ms", 1)
    assert redis_store.get_result(job.id) is None and redis_store.open_result(job.id) is None


def test_dismissing_drops_the_blobs(redis_store: RedisJobStore, tmp_path: Path) -> None:
    folder = tmp_path / "blobs" / redis_store.keys.prefix
    waiting = redis_store.submit(make_job(seed=1), b"radar").job
    assert os.listdir(folder / "inputs") == [waiting.id]
    redis_store.cancel(waiting.id)
    assert os.listdir(folder / "inputs") == []

    done = redis_store.submit(make_job(seed=2), b"radar").job
    (delivery,) = redis_store.claim("w", count=1, block_s=0.5)
    redis_store.start(delivery, "w")
    redis_store.complete(delivery, b"forecast")
    assert redis_store.cancel(done.id).status is JobStatus.DISMISSED
    assert os.listdir(folder / "results") == []


def test_refused_submit_leaves_no_input(redis_url: str, tmp_path: Path) -> None:
    store = RedisJobStore.from_url(
        redis_url,
        f"nowcast-test-{uuid.uuid4().hex}",
        QueuePolicy(max_queue_length=1),
        blob_url=str(tmp_path / "blobs"),
    )
    try:
        store.submit(make_job(seed=1), b"radar")
        with pytest.raises(QueueFullError):
            store.submit(make_job(seed=2), b"radar")
        assert len(os.listdir(tmp_path / "blobs" / store.keys.prefix / "inputs")) == 1
    finally:
        store.delete_all_keys()
        store.close()


def test_sweep_deletes_expired_blobs(redis_store: RedisJobStore, tmp_path: Path) -> None:
    job = redis_store.submit(make_job(), b"radar").job
    path = tmp_path / "blobs" / redis_store.keys.prefix / "inputs" / job.id
    long_ago = time.time() - 7200
    os.utime(path, (long_ago, long_ago))
    assert redis_store.sweep_blobs() == 1
    assert redis_store.load_input(job.id) is None
