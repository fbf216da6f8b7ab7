"""Real processes for the integration tests: uvicorn (`nowcast serve`) and `nowcast worker`s.

Every deployment gets its own Redis key prefix, so tests never see each other's jobs; its logs go
to files under the test's tmp folder (printed when a wait times out). `deployment` sets one up
(environment, processes, queue probe) and tears it down whatever happens; `Cluster` also has what
fault tests need: workers of a chosen entry point, a supervisor that replaces dead workers the way
`nowcast serve` or Kubernetes would, and extra API processes that can be killed alone.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import netCDF4
import numpy as np

from tests.support.queue_probe import QueueProbe

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
RADAR_64 = DATA / "mch_20150515_64.nc"
TERMINAL = ("successful", "failed", "dismissed")
REAL_WORKER = ("service.cli", "worker")
# the API keys of the two tenants of the cluster tests/service/conftest.py shares
KEY_A = "key-alpha-0123456789abcdef"
KEY_B = "key-beta-0123456789abcdef0"
# that cluster's request body cap: above every radar file in tests/data, so tests can pass it
SHARED_MAX_BODY_BYTES = 300_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.2):
    """Poll `predicate` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")


def settings_env(**settings: Any) -> dict[str, str]:
    """`NOWCAST_*` environment of settings given by field name, e.g. `worker_drain_s=0.5`."""
    return {f"NOWCAST_{name.upper()}": str(value) for name, value in settings.items()}


class Cluster:
    """API processes and worker processes sharing one Redis prefix (or the embedded queue).

    Parameters
    ----------
    tmp : Path
        Folder for the processes' log files.
    env : dict
        `NOWCAST_*` settings of every process (see `redis_env`).
    worker_command : tuple of str
        Module (and arguments) run by `python -m` for a worker.
    """

    def __init__(
        self, tmp: Path, env: dict[str, str], worker_command: tuple[str, ...] = REAL_WORKER
    ) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "NOWCAST_LOG_LEVEL": "INFO", **env}
        self.worker_command = worker_command
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.replaced = 0
        self._supervisor: threading.Thread | None = None
        self._supervising = threading.Event()

    def _spawn(
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

    # ------------------------------------------------------------------ API processes
    def start_api(self, workers: int = 0) -> None:
        """The cluster's API (`nowcast serve --workers N`) on `self.url`, once healthy."""
        self.api = self._spawn(
            ("service.cli", "serve", "--port", str(self.port), "--workers", str(workers)),
            "api.log",
        )
        self._wait_healthy(self.api, self.url)

    def spawn_api(self, log_name: str) -> tuple[subprocess.Popen[bytes], str]:
        """Another API process (no workers) on a free port; (process, base URL) once healthy."""
        port = free_port()
        proc = self._spawn(
            ("service.cli", "serve", "--port", str(port), "--workers", "0"), log_name
        )
        url = f"http://127.0.0.1:{port}"
        self._wait_healthy(proc, url)
        return proc, url

    def _wait_healthy(self, proc: subprocess.Popen[bytes], url: str) -> None:
        def healthy() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"API exited with {proc.returncode}:\n{self.logs()}")
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 60, f"the API at {url} to answer /healthz", interval_s=0.2)

    # ------------------------------------------------------------------ workers
    def start_worker(self, **settings: Any) -> subprocess.Popen[bytes]:
        """Start a worker; `settings` override the cluster's, e.g. `worker_drain_s=0.5`."""
        proc = self._spawn(
            self.worker_command, f"worker-{len(self.workers)}.log", settings_env(**settings)
        )
        self.workers.append(proc)
        return proc

    def start(self, workers: int) -> None:
        """The API plus `workers` worker processes, once all of them are ready."""
        self.start_api()
        for _ in range(workers):
            self.start_worker()
        self.wait_workers(workers)

    def wait_workers(self, count: int, timeout_s: float = 120) -> None:
        def ready() -> bool:
            response = httpx.get(f"{self.url}/readyz", timeout=5)
            return response.status_code == 200 and response.json()["workers"] >= count

        try:
            wait_for(ready, timeout_s, f"{count} ready workers", interval_s=0.5)
        except TimeoutError:
            print(self.logs())
            raise

    def live_workers(self) -> list[subprocess.Popen[bytes]]:
        return [proc for proc in self.workers if proc.poll() is None]

    def worker_by_pid(self, pid: int) -> subprocess.Popen[bytes] | None:
        return next((proc for proc in self.workers if proc.pid == pid), None)

    def supervise(self, count: int, interval_s: float = 0.2) -> None:
        """Keep `count` workers alive: start a new one whenever one has exited."""

        def loop() -> None:
            while not self._supervising.wait(interval_s):
                for _ in range(count - len(self.live_workers())):
                    self.start_worker()
                    self.replaced += 1

        self._supervising.clear()
        self._supervisor = threading.Thread(target=loop, name="cluster-supervisor", daemon=True)
        self._supervisor.start()

    def stop_supervising(self) -> None:
        self._supervising.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
            self._supervisor = None

    # ------------------------------------------------------------------ end
    def client(self, key: str, timeout_s: float = 30) -> httpx.Client:
        """An HTTP client of the API that sends `key` as its bearer token."""
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout_s
        )

    def logs(self) -> str:
        return "\n".join(
            f"===== {path.name}\n{path.read_text(errors='replace')[-6000:]}"
            for path in sorted(self.tmp.glob("*.log"))
        )

    def stop(self) -> None:
        """SIGTERM every process we started, then wait (SIGKILL after 30 s)."""
        self.stop_supervising()
        for proc in [*self.workers, self.api]:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*self.workers, self.api]:
            if proc is None:
                continue
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def redis_env(redis_url: str, **settings: Any) -> tuple[dict[str, str], str]:
    """Environment of a Redis-backed cluster with a fresh key prefix; (env, prefix)."""
    prefix = f"nowcast-test-{uuid.uuid4().hex[:12]}"
    env = {"NOWCAST_REDIS_URL": redis_url, "NOWCAST_REDIS_KEY_PREFIX": prefix}
    env.update(settings_env(**settings))
    return env, prefix


@contextmanager
def deployment(
    tmp: Path,
    redis_url: str,
    *,
    worker_command: tuple[str, ...] = REAL_WORKER,
    **settings: Any,
) -> Iterator[tuple[Cluster, QueueProbe]]:
    """A cluster on a fresh key prefix of `redis_url` and a probe of that prefix.

    No process is started (see `Cluster.start`); on exit every process is stopped and every key
    of the prefix deleted. `settings` are `NOWCAST_*` settings by field name.
    """
    env, prefix = redis_env(redis_url, **settings)
    cluster = Cluster(tmp, env, worker_command)
    probe = QueueProbe(redis_url, prefix)
    try:
        yield cluster, probe
    finally:
        cluster.stop()
        probe.delete_all()
        probe.close()


def consumer_pid(consumer: str) -> int:
    """The pid inside a worker's consumer name `<host>-<pid>-<random>`."""
    return int(consumer.rsplit("-", 2)[1])


def kill(proc: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGKILL) -> None:
    """Send `sig` to one process we started, by its pid."""
    os.kill(proc.pid, sig)


def write_keys_file(path: Path, keys: dict[str, str]) -> Path:
    path.write_text(json.dumps(keys))
    return path


# ---------------------------------------------------------------------- HTTP


def submit(client: httpx.Client, data: bytes, **params: Any) -> httpx.Response:
    return client.post(
        "/v1/nowcasts",
        params=params,
        content=data,
        headers={"Content-Type": "application/x-netcdf"},
    )


def wait_status(client: httpx.Client, job_id: str, timeout_s: float = 120, statuses=TERMINAL):
    def reached() -> dict[str, Any] | None:
        job = client.get(f"/v1/nowcasts/{job_id}").json()
        return job if job["status"] in statuses else None

    return wait_for(reached, timeout_s, f"job {job_id} to reach {statuses}", interval_s=0.2)


def sse_events(client: httpx.Client, job_id: str, timeout_s: float = 120) -> list[dict[str, Any]]:
    """Every `status` event of a job's stream, until the server ends it."""
    events = []
    with client.stream(
        "GET", f"/v1/nowcasts/{job_id}/events", timeout=httpx.Timeout(10, read=timeout_s)
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[len("data:") :]))
    return events


def forecast_precip(result: bytes) -> np.ndarray:
    """`(members, T, H, W)` float32 rain rate [mm h-1] of a forecast file, NaN = no coverage."""
    with netCDF4.Dataset("forecast.nc", memory=result) as ds:
        return np.ma.filled(ds["precip"][:].astype(np.float32), np.nan)
