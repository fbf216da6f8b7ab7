"""`nowcast serve`: the HTTP API plus N workers.

With `NOWCAST_REDIS_URL` set, the workers are `nowcast worker` child processes (restarted if one
dies) and any number of other worker processes may join the same Redis. Without it, the queue is
embedded in this process and the N workers run as threads beside the API. `--workers 0` runs the
API alone.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from service.log import configure_logging
from service.settings import get_settings
from service.threads import threads_per_worker

logger = logging.getLogger(__name__)

_RESTART_BACKOFF_S = 5.0


class WorkerProcesses:
    """Keeps N `nowcast worker` child processes running until `stop()`."""

    def __init__(self, count: int, drain_s: float, threads: int | None = None) -> None:
        self.count = count
        self.drain_s = drain_s
        # each child's compute threads (service.threads), so that the children's add up to the
        # cores rather than each sizing its pools for the whole machine
        self.threads = threads or threads_per_worker(count)
        self.procs: list[subprocess.Popen[bytes]] = []
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="worker-watch", daemon=True)

    def start(self) -> None:
        self.procs = [self._spawn(i) for i in range(self.count)]
        self._watcher.start()

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        env = {**os.environ, "NOWCAST_WORKER_THREADS": str(self.threads)}
        proc = subprocess.Popen([sys.executable, "-m", "service.cli", "worker"], env=env)
        logger.info("worker process %d started (pid %d)", index, proc.pid)
        return proc

    def _watch(self) -> None:
        while not self._stopping.wait(_RESTART_BACKOFF_S):
            for index, proc in enumerate(self.procs):
                if proc.poll() is not None and not self._stopping.is_set():
                    logger.warning(
                        "worker process %d (pid %d) exited with %s; restarting it",
                        index,
                        proc.pid,
                        proc.returncode,
                    )
                    self.procs[index] = self._spawn(index)

    def stop(self) -> None:
        """SIGTERM every worker (they finish or release their jobs), then wait for them."""
        self._stopping.set()
        # the watcher may be replacing a dead worker right now; once it has returned, the list
        # is final, so no worker it starts is left running, orphaned
        if self._watcher.is_alive():
            self._watcher.join()
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + self.drain_s + 10
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("worker pid %d did not stop in time; killing it", proc.pid)
                proc.kill()
                proc.wait()


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    # a requested stop: leave through `finally` (workers stopped), with status 0
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    """Start the API (uvicorn) and the workers; returns when the server stops."""
    settings = get_settings()
    parser = argparse.ArgumentParser(
        prog="nowcast serve",
        description="HTTP API plus N workers (embedded queue unless NOWCAST_REDIS_URL is set).",
    )
    parser.add_argument("--host", default=settings.host, help=f"bind address ({settings.host})")
    parser.add_argument("--port", type=int, default=settings.port, help=f"port ({settings.port})")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes (Redis) or threads (embedded); 0 = the API alone (default 1)",
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING")
    args = parser.parse_args(argv)
    if args.workers < 0:
        parser.error("--workers must be >= 0")
    configure_logging(args.log_level)

    import uvicorn

    from service.api.app import create_app
    from service.http_protocol import head_deadline_protocol

    # uvicorn re-raises a SIGTERM after its graceful shutdown; under the default action that
    # would end this process before `finally` stops the worker children, orphaning them
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    workers: WorkerProcesses | None = None
    if settings.redis_url:
        # the app first: it resolves (and if need be creates) the model folder the workers load
        app = create_app(settings)
        if args.workers:
            workers = WorkerProcesses(
                args.workers, settings.worker_drain_s, settings.worker_threads
            )
            workers.start()
    else:
        app = create_app(settings, embedded_workers=args.workers)
    try:
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            log_config=None,
            timeout_graceful_shutdown=int(settings.worker_drain_s) + 5,
            # idle connections, slow heads and oversized heads hold no socket or buffer for long
            http=head_deadline_protocol(settings.header_timeout_s),
            timeout_keep_alive=max(1, round(settings.keep_alive_timeout_s)),
            h11_max_incomplete_event_size=settings.max_header_bytes,
        )
    finally:
        if workers is not None:
            workers.stop()
    return 0
