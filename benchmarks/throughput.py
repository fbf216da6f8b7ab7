"""Real-forecast throughput of `nowcast serve`: jobs per minute, default threads against hand-tuned.

Issue 14 asks that the service's own thread budget (`service/threads.py`: threads per worker =
cores // workers) be at least as fast as the best hand-tuned setting. For each setting this starts
the service (`benchmarks.load.running_service`: real uvicorn, Redis, worker processes, auth on),
submits a burst of real jobs of the shipped model (20 members, the model's default steps, every
product, the README's 256 x 256 sample) and reads their throughput off the server's own
timestamps (first job created to last job finished).

    python benchmarks/throughput.py [--jobs 6] [--settings 1:auto,2:auto,1:1,2:2] [--json F]

A setting is `workers:threads`; `auto` is the service's default for that worker count. The
figures depend on the machine's load: the report gives the 1-min load average before each run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere in the checkout

from benchmarks.load import DEFAULT_REDIS_URL, burst, running_service  # noqa: E402
from models.metadata import DEFAULT_MODEL_DIR  # noqa: E402
from service.threads import available_cores, threads_per_worker  # noqa: E402

DEFAULT_INPUT = REPO / "examples" / "mch_20150515_256.nc"
REAL_JOB = {"members": 20}


@contextmanager
def worker_threads(threads: int | None) -> Iterator[None]:
    """`NOWCAST_WORKER_THREADS` for the service started inside (None = the service's default)."""
    saved = os.environ.pop("NOWCAST_WORKER_THREADS", None)
    if threads is not None:
        os.environ["NOWCAST_WORKER_THREADS"] = str(threads)
    try:
        yield
    finally:
        os.environ.pop("NOWCAST_WORKER_THREADS", None)
        if saved is not None:
            os.environ["NOWCAST_WORKER_THREADS"] = saved


def parse_settings(spec: str) -> list[tuple[int, int | None]]:
    """ "1:auto,2:1" -> [(1, None), (2, 1)]."""
    settings = []
    for item in spec.split(","):
        workers, _, threads = item.strip().partition(":")
        settings.append((int(workers), None if threads in ("", "auto") else int(threads)))
    return settings


async def _run(url: str, key: str, radar: bytes, jobs: int, timeout_s: float) -> dict:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120.0) as client:
        figures = await burst(client, radar, jobs, 4, timeout_s, job=REAL_JOB)
    return asdict(figures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    parser.add_argument("--jobs", type=int, default=6, help="jobs per setting")
    parser.add_argument("--settings", default="1:auto,2:auto,1:1,2:2", help="workers:threads,...")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--timeout-s", type=float, default=1800.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    radar = args.input.read_bytes()
    cores = available_cores()
    rows = []
    for workers, threads in parse_settings(args.settings):
        effective = threads or threads_per_worker(workers, cores)
        load = os.getloadavg()[0]
        with tempfile.TemporaryDirectory() as tmp, worker_threads(threads):
            service = running_service(
                args.redis_url, args.model_dir, workers, args.jobs + 2, Path(tmp)
            )
            with service as (url, keys):
                figures = asyncio.run(_run(url, keys["burst"], radar, args.jobs, args.timeout_s))
        # from the span, not load.py's rounded jobs/s (0.05 or 0.06 jobs/s is 3.0 or 3.6 a min)
        per_min = 60.0 * figures["completed"] / figures["all_done_s"]
        row = {
            "workers": workers,
            "threads_per_worker": effective,
            "default": threads is None,
            "jobs_per_min": round(per_min, 2),
            "completed": figures["completed"],
            "span_s": figures["all_done_s"],
            "run_p50_s": figures["run_p50_s"],
            "load_average_before": round(load, 2),
        }
        rows.append(row)
        label = "default" if threads is None else "hand-set"
        print(
            f"workers {workers} x {effective} threads ({label}): {per_min:.2f} jobs/min, "
            f"{figures['completed']}/{args.jobs} done in {figures['all_done_s']} s, "
            f"load before {load:.2f}",
            flush=True,
        )
    best_default = max((r["jobs_per_min"] for r in rows if r["default"]), default=0.0)
    best_any = max(r["jobs_per_min"] for r in rows)
    print(
        f"{cores} cores; best default setting {best_default:.2f} jobs/min, best of all "
        f"{best_any:.2f}: default {'at least as fast' if best_default >= best_any else 'slower'}"
    )
    if args.json:
        args.json.write_text(json.dumps({"cores": cores, "job": REAL_JOB, "rows": rows}, indent=2))
    return 0 if all(r["completed"] == args.jobs for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
