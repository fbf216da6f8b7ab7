"""A view of one deployment's Redis keys, to check what the HTTP API cannot show: pending entries,
the dead-letter stream, leftover keys. Read-only, but for the clean-up `delete_all`."""

from __future__ import annotations

from typing import Any

import redis

from service.blobstore import open_blob_store
from service.queue.constants import CONSUMER_GROUP, COUNTER_JOBS, RedisKeys
from service.settings import Settings


class QueueProbe:
    """The Redis keys of one deployment (key prefix), for assertions."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.db = redis.Redis.from_url(redis_url)
        self.keys = RedisKeys(prefix)
        self.prefix = prefix
        # the deployment's processes inherit this environment, so they use the same blob store
        self.blobs = open_blob_store(Settings().blob_url)

    def job(self, job_id: str) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.db.hgetall(self.keys.job(job_id)).items()}

    def has_result(self, job_id: str) -> bool:
        return self.blobs.exists(f"{self.prefix}/results/{job_id}")

    def has_input(self, job_id: str) -> bool:
        return self.blobs.exists(f"{self.prefix}/inputs/{job_id}")

    def stream_length(self) -> int:
        return int(self.db.xlen(self.keys.stream)) if self.db.exists(self.keys.stream) else 0

    def pending(self) -> int:
        if not self.db.exists(self.keys.stream):
            return 0
        return int(self.db.xpending(self.keys.stream, CONSUMER_GROUP)["pending"])

    def dead_letters(self) -> list[dict[str, str]]:
        if not self.db.exists(self.keys.dead_letter_stream):
            return []
        return [
            {k.decode(): v.decode() for k, v in fields.items()}
            for _id, fields in self.db.xrange(self.keys.dead_letter_stream)
        ]

    def active(self) -> set[str]:
        return {m.decode() for m in self.db.smembers(self.keys.active_set)}

    def counters(self) -> dict[str, int]:
        raw = self.db.hgetall(self.keys.counter(COUNTER_JOBS))
        return {k.decode(): int(v) for k, v in raw.items()}

    def job_ids(self) -> set[str]:
        """Ids of every job record (`p:job:<id>`, not its blobs)."""
        ids = set()
        for key in self.db.scan_iter(match=f"{self.prefix}:job:*", count=500):
            rest = key.decode()[len(f"{self.prefix}:job:") :]
            if ":" not in rest:
                ids.add(rest)
        return ids

    def all_keys(self) -> set[str]:
        return {k.decode() for k in self.db.scan_iter(match=f"{self.prefix}:*", count=500)}

    def summary(self) -> dict[str, Any]:
        return {
            "stream": self.stream_length(),
            "pending": self.pending(),
            "dead": len(self.dead_letters()),
            "active": len(self.active()),
            "counters": self.counters(),
        }

    def delete_all(self) -> None:
        """Delete every key of the prefix (a test's clean-up; the one method that writes)."""
        for key in self.db.scan_iter(match=f"{self.prefix}:*", count=500):
            self.db.delete(key)

    def close(self) -> None:
        self.db.close()
