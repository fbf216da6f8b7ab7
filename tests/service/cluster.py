"""Real processes for the service tests: uvicorn (`nowcast serve`) and `nowcast worker`s.

Every cluster gets its own Redis key prefix, so tests never see each other's jobs; its logs go to
files under the test's tmp folder (printed when a wait times out).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import redis

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
RADAR_64 = DATA / "mch_20150515_64.nc"
TERMINAL = ("successful", "failed", "dismissed")


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


class Cluster:
    """An API process and worker processes sharing one Redis prefix (or the embedded queue)."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "NOWCAST_LOG_LEVEL": "INFO", **env}
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / log_name, "wb")  # noqa: SIM115 - lives as long as the process
        return subprocess.Popen(
            [sys.executable, "-m", "service.cli", *args],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def start_api(self, workers: int = 0) -> None:
        self.api = self._spawn(
            ["serve", "--port", str(self.port), "--workers", str(workers)], "api.log"
        )
        wait_for(self._healthy, 60, "the API to answer /healthz", interval_s=0.3)

    def start_worker(self) -> subprocess.Popen[bytes]:
        proc = self._spawn(["worker"], f"worker-{len(self.workers)}.log")
        self.workers.append(proc)
        return proc

    def _healthy(self) -> bool:
        if self.api is not None and self.api.poll() is not None:
            raise RuntimeError(f"API exited with {self.api.returncode}:\n{self.logs()}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_workers(self, count: int, timeout_s: float = 120) -> None:
        def ready() -> bool:
            response = httpx.get(f"{self.url}/readyz", timeout=5)
            return response.status_code == 200 and response.json()["workers"] >= count

        try:
            wait_for(ready, timeout_s, f"{count} ready workers", interval_s=0.5)
        except TimeoutError:
            print(self.logs())
            raise

    def logs(self) -> str:
        return "\n".join(
            f"===== {path.name}\n{path.read_text(errors='replace')[-6000:]}"
            for path in sorted(self.tmp.glob("*.log"))
        )

    def stop(self) -> None:
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
    env.update({f"NOWCAST_{k.upper()}": str(v) for k, v in settings.items()})
    return env, prefix


def delete_prefix(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{prefix}:*", count=500):
        client.delete(key)
    client.close()


def write_keys_file(path: Path, keys: dict[str, str]) -> Path:
    path.write_text(json.dumps(keys))
    return path


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
