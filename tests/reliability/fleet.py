"""Process fleet and queue inspection for the reliability tests.

`Fleet` is the service tests' `Cluster` (uvicorn + worker processes on one Redis key prefix) plus
what fault tests need: workers of a chosen entry point (the real one or the test-only crashing
one), SIGKILL / SIGTERM by pid, a supervisor that replaces dead workers the way `nowcast serve` or
Kubernetes would, and a second API process that can be killed alone. `QueueProbe` reads the
queue's Redis keys directly, to check what the HTTP API cannot show (pending entries, the
dead-letter stream, leftover keys).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import redis

from service.queue.constants import CONSUMER_GROUP, COUNTER_JOBS, RedisKeys
from tests.service.cluster import REPO, Cluster, free_port, wait_for

REAL_WORKER = ("service.cli", "worker")
CRASHING_WORKER = ("tests.reliability.crashing_worker",)


class Fleet(Cluster):
    """An API process and a set of worker processes sharing one Redis key prefix.

    Parameters
    ----------
    tmp : Path
        Folder for the processes' log files.
    env : dict
        `NOWCAST_*` settings of every process (see `tests.service.cluster.redis_env`).
    worker_command : tuple of str
        Module (and arguments) run by `python -m` for a worker.
    """

    def __init__(
        self, tmp: Path, env: dict[str, str], worker_command: tuple[str, ...] = REAL_WORKER
    ) -> None:
        super().__init__(tmp, env)
        self.worker_command = worker_command
        self._supervisor: threading.Thread | None = None
        self._supervising = threading.Event()
        self.replaced = 0

    def _spawn_module(
        self, command: tuple[str, ...], log_name: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.tmp / log_name, "wb")  # noqa: SIM115 - lives as long as the process
        return subprocess.Popen(
            [sys.executable, "-m", *command],
            cwd=REPO,
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def start_worker(self, **settings: Any) -> subprocess.Popen[bytes]:
        """Start a worker; `settings` override the fleet's, e.g. `worker_drain_s=0.5`."""
        env = {f"NOWCAST_{name.upper()}": str(value) for name, value in settings.items()}
        proc = self._spawn_module(self.worker_command, f"worker-{len(self.workers)}.log", env)
        self.workers.append(proc)
        return proc

    def live_workers(self) -> list[subprocess.Popen[bytes]]:
        return [proc for proc in self.workers if proc.poll() is None]

    def worker_by_pid(self, pid: int) -> subprocess.Popen[bytes] | None:
        return next((proc for proc in self.workers if proc.pid == pid), None)

    # ------------------------------------------------------------------ supervision
    def supervise(self, count: int, interval_s: float = 0.2) -> None:
        """Keep `count` workers alive: start a new one whenever one has exited."""

        def loop() -> None:
            while not self._supervising.wait(interval_s):
                for _ in range(count - len(self.live_workers())):
                    self.start_worker()
                    self.replaced += 1

        self._supervising.clear()
        self._supervisor = threading.Thread(target=loop, name="fleet-supervisor", daemon=True)
        self._supervisor.start()

    def stop_supervising(self) -> None:
        self._supervising.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
            self._supervisor = None

    def stop(self) -> None:
        self.stop_supervising()
        super().stop()

    # ------------------------------------------------------------------ a second API
    def spawn_api(self, log_name: str) -> tuple[subprocess.Popen[bytes], str]:
        """Another API process (no workers) on a free port; (process, base URL) once healthy."""
        port = free_port()
        proc = self._spawn_module(
            ("service.cli", "serve", "--port", str(port), "--workers", "0"), log_name
        )
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"API exited with {proc.returncode}:\n{self.logs()}")
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 60, f"the API on port {port}", interval_s=0.2)
        return proc, url


def consumer_pid(consumer: str) -> int:
    """The pid inside a worker's consumer name `<host>-<pid>-<random>`."""
    return int(consumer.rsplit("-", 2)[1])


def kill(proc: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGKILL) -> None:
    """Send `sig` to one process we started, by its pid."""
    os.kill(proc.pid, sig)


class QueueProbe:
    """Read-only view of one deployment's Redis keys (prefix), for assertions."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.db = redis.Redis.from_url(redis_url)
        self.keys = RedisKeys(prefix)
        self.prefix = prefix

    def job(self, job_id: str) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.db.hgetall(self.keys.job(job_id)).items()}

    def has_result(self, job_id: str) -> bool:
        return bool(self.db.exists(self.keys.job_result(job_id)))

    def has_input(self, job_id: str) -> bool:
        return bool(self.db.exists(self.keys.job_input(job_id)))

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

    def close(self) -> None:
        self.db.close()
