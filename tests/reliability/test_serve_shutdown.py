"""`nowcast serve --workers N` stopped by SIGTERM (docker stop, systemd, Ctrl-C's sibling) stops its
worker processes too: none is left running, orphaned, on the queue."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.support.cluster import deployment, wait_for

pytestmark = pytest.mark.integration


def _children(pid: int) -> list[int]:
    """Pids whose parent is `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_to_serve_stops_its_workers(
    tmp_path: Path, redis_url: str, tiny_model_dir: Path
) -> None:
    workers: list[int] = []
    with deployment(
        tmp_path,
        redis_url,
        model_dir=tiny_model_dir,
        worker_heartbeat_max_age_s=3,
        heartbeat_interval_s=0.5,
        worker_poll_s=0.3,
        worker_drain_s=2,
    ) as (fleet, probe):
        try:
            fleet.start_api(workers=2)
            fleet.wait_workers(2)
            workers = _children(fleet.api.pid)
            assert len(workers) == 2
            fleet.api.send_signal(signal.SIGTERM)
            fleet.api.wait(timeout=60)
            wait_for(
                lambda: not any(_alive(pid) for pid in workers),
                30,
                "the worker processes to stop with the server",
            )
            # they stopped cleanly: heartbeats withdrawn, not merely gone stale
            assert probe.db.zcard(probe.keys.heartbeats) == 0
        finally:
            for pid in workers:  # never leave an orphan behind, whatever happened
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
