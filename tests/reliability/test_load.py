"""The load benchmark at CI size (`benchmarks/load.py --small`): it runs against a real service,
every job of the burst completes, and status polling holds its rate without errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cluster import REPO

pytestmark = pytest.mark.integration


def test_small_load_benchmark(tmp_path: Path, redis_url: str, tiny_model_dir: Path) -> None:
    out = tmp_path / "load.json"
    done = subprocess.run(
        [
            sys.executable, str(REPO / "benchmarks" / "load.py"), "--small",
            "--redis-url", redis_url, "--model-dir", str(tiny_model_dir), "--json", str(out),
        ],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    figures = json.loads(out.read_text())
    polling, burst = figures["polling"], figures["burst"]
    assert polling["requests"] == 1000 and polling["statuses"] == {"200": 1000}
    assert polling["achieved_rate_hz"] >= 0.9 * polling["target_rate_hz"]
    assert 0 < polling["p50_ms"] <= polling["p99_ms"] <= polling["max_ms"]
    assert burst["accepted"] == burst["completed"] == burst["jobs"] == 50
    assert burst["failed"] == 0 and burst["statuses"]["final successful"] == 50
    assert 0 <= burst["queue_wait_p50_s"] <= burst["queue_wait_p99_s"] <= burst["end_to_end_p99_s"]
    assert burst["throughput_jobs_s"] > 0
    print(done.stdout)
