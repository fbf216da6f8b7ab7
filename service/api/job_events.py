"""One shared poller per API process for the jobs' event streams (SSE).

Each open stream used to poll the store on its own (1000 streams: 4000 Redis reads a second, and
status requests waited behind them in the thread pool). Now one loop reads every watched job in
one batch per `interval_s` (`JobStore.get_many`: one Redis pipeline) and hands the latest record
to the streams that watch it; a stream only waits on an asyncio condition.

Redis keyspace notifications were the alternative; they need `notify-keyspace-events` set on the
server (managed Redis often forbids CONFIG) and a pub/sub connection per process, and progress is
written at most every `progress_interval_s` anyway, so a batched poll loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool

from service.queue.jobs import Job
from service.queue.store import JobStore

logger = logging.getLogger(__name__)


@dataclass
class _Topic:
    """The latest record of one watched job; `version` grows on every poll that read it.

    `changed` is set (and replaced by a fresh event) on each new version: one event loop, so no
    lock is needed, and waiting on an event is safe to cancel (a condition's lock under
    `wait_for` timeouts is not, on Python 3.11)."""

    job: Job | None
    version: int = 0  # grows on every change the poller saw
    subscribers: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def publish(self, job: Job | None) -> None:
        self.job = job
        self.version += 1
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()


class Subscription:
    """One stream's view of a job: `next` waits for a newer record than the one it last saw."""

    def __init__(self, topic: _Topic) -> None:
        self._topic = topic
        self._seen = -1

    async def next(self, timeout_s: float) -> Job | None:
        """The job's latest record once the poller has read it again (at once the first time),
        or the same record after `timeout_s`; None once the job is gone."""
        topic = self._topic
        if topic.version == self._seen:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(topic.changed.wait(), timeout_s)
        self._seen = topic.version
        return topic.job


class JobEventHub:
    """The per-process poller and its subscriptions (created in the app, used by the routes).

    Parameters
    ----------
    store : JobStore
        Where job records are read.
    interval_s : float
        Time between two polls (`Settings.sse_poll_interval_s`).
    """

    def __init__(self, store: JobStore, interval_s: float) -> None:
        self.store = store
        self.interval_s = interval_s
        self._topics: dict[str, _Topic] = {}
        self._task: asyncio.Task[None] | None = None
        self.polls = 0  # poll rounds made (a test and an operator can see the loop's work)

    @contextlib.asynccontextmanager
    async def subscribe(self, job: Job) -> AsyncIterator[Subscription]:
        """Watch `job` (its record as the caller read it is the first one served)."""
        topic = self._topics.get(job.id)
        if topic is None:
            topic = self._topics[job.id] = _Topic(job)
        topic.subscribers += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll_loop(), name="sse-poller")
        try:
            yield Subscription(topic)
        finally:
            topic.subscribers -= 1
            if topic.subscribers == 0 and self._topics.get(job.id) is topic:
                del self._topics[job.id]

    @property
    def watched(self) -> int:
        return len(self._topics)

    async def _poll_loop(self) -> None:
        # ends once nobody watches; the next subscription starts it again
        while self._topics:
            await asyncio.sleep(self.interval_s)
            job_ids = list(self._topics)
            if not job_ids:
                break
            try:
                jobs = await run_in_threadpool(self.store.get_many, job_ids)
            except Exception as exc:  # a store hiccup: the streams wait for the next round
                logger.warning("event streams: reading %d job(s) failed: %s", len(job_ids), exc)
                continue
            self.polls += 1
            for job_id in job_ids:
                topic = self._topics.get(job_id)
                # only a changed record wakes the streams: idle ones cost nothing between polls
                if topic is not None and jobs.get(job_id) != topic.job:
                    topic.publish(jobs.get(job_id))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
