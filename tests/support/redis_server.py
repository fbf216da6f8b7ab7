"""A private `redis-server` for tests that stop or kill Redis: own port, own folder, AOF on."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from tests.support.cluster import free_port, wait_for


class RedisServer:
    """One redis-server on 127.0.0.1 with append-only persistence in `folder`.

    `appendfsync always` makes every acknowledged write durable, so that even `kill()` (SIGKILL)
    loses nothing; `restart()` brings it back on the same port and folder, replaying the AOF.
    """

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        log = open(self.folder / "redis.log", "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.folder),
                "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                "--maxmemory-policy", "noeviction", "--protected-mode", "yes",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for(self.answers, 20, f"redis-server on port {self.port}", interval_s=0.05)

    def answers(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """SIGTERM: Redis flushes the AOF and exits; SIGKILL: a crash."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=20)
        self.proc = None

    def restart(self, sig: signal.Signals = signal.SIGTERM, down_s: float = 0.0) -> None:
        """Stop (by `sig`), stay down `down_s`, start again on the same port and folder."""
        self.stop(sig)
        time.sleep(down_s)
        self.start()
