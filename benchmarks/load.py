"""Load benchmark of the nowcasting service over loopback HTTP (httpx async), bounded in time.

Starts the service itself (`nowcast serve --workers N` on a Redis, under a fresh key prefix, auth
on), then measures two things:

1. status polling: `GET /v1/nowcasts/{id}` sent open-loop at a fixed rate (default 200 req/s) for
   a fixed time; latency is counted from each request's *scheduled* send time, so a client or
   server that falls behind shows in the figures (no coordinated omission); p50, p99, max;
2. a burst of jobs (default 1,000) submitted as fast as `--concurrency` connections allow, then
   followed (the tenant's job list, paged) until every job is terminal: submit rate, end-to-end
   throughput, queue wait (started - created) and end-to-end time (finished - created) from the
   server's own timestamps, and whether all of them completed.

The jobs run a fast stand-in configuration, so that the figures are the service's (HTTP,
validation, Redis queue, batching, NetCDF output), not the model's: the `tiny` random model
(or `--model-dir`), 1 member, 1 sampler step, `products=mean`, on the 64 x 64 x 9 test fixture.

    python benchmarks/load.py                 # full size: 200 req/s for 30 s, 1,000 jobs
    python benchmarks/load.py --small         # CI size: 200 req/s for 5 s, 50 jobs
    python benchmarks/load.py --json out.json # also write the figures
    python benchmarks/load.py --streams 1000  # status polling with 1,000 open event streams

`--streams N` measures only status polling, first with no event stream open, then while N event
streams (SSE) stay open on waiting jobs: the API runs without workers (`--workers 0`), so the jobs
stay `accepted` and their streams open for the whole measurement. The streams are held by
`--stream-procs` child processes (default: one per 250 streams; asyncio + httpx, one connection
per stream), so that the poller's own event loop and file descriptors are not the client's
bottleneck: what the figures show is the server's.

Exit status 0 when every job completed and no request got a 5xx, else 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis

REPO = Path(__file__).resolve().parents[1]
RADAR_64 = REPO / "tests" / "data" / "mch_20150515_64.nc"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_MODEL_CACHE = Path.home() / ".cache" / "nowcast" / "load-benchmark-tiny"
# the fast stand-in job: what the service does around a forecast, with almost no forecast
FAST_JOB = {"members": 1, "steps": 1, "products": "mean"}
TERMINAL = ("successful", "failed", "dismissed")


@dataclass
class PollFigures:
    """Open-loop status polling; latencies [ms] from each request's scheduled send time."""

    target_rate_hz: float
    duration_s: float
    requests: int
    achieved_rate_hz: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    client_lag_p99_ms: float  # how late the client itself sent (its own load)
    statuses: dict[str, int]


@dataclass
class BurstFigures:
    """A burst of jobs; times [s] from the server's created/started/finished timestamps."""

    jobs: int
    accepted: int
    completed: int
    failed: int
    submit_wall_s: float
    submit_rate_hz: float
    submit_p50_ms: float
    submit_p99_ms: float
    all_done_s: float  # first submit -> last job finished
    throughput_jobs_s: float
    queue_wait_p50_s: float
    queue_wait_p99_s: float
    queue_wait_max_s: float
    end_to_end_p50_s: float
    end_to_end_p99_s: float
    run_p50_s: float
    statuses: dict[str, int] = field(default_factory=dict)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tiny_model_dir(cache: Path) -> Path:
    """A seeded random `tiny` model folder, made once (~30 s) and reused."""
    if (cache / "model.yaml").is_file():
        return cache
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from models.bundle import create_random_model_dir; "
            "create_random_model_dir(sys.argv[1], 'tiny', seed=0)",
            str(cache),
        ],
        cwd=REPO,
        check=True,
    )
    return cache


@contextmanager
def running_service(
    redis_url: str, model_dir: Path, workers: int, max_queue: int, log_dir: Path
) -> Iterator[tuple[str, dict[str, str]]]:
    """`nowcast serve --workers N` on loopback; yields (base URL, tenant -> API key)."""
    keys = {"poll": secrets.token_urlsafe(24), "burst": secrets.token_urlsafe(24)}
    keys_file = log_dir / "keys.json"
    keys_file.write_text(json.dumps({key: tenant for tenant, key in keys.items()}))
    prefix = f"nowcast-load-{uuid.uuid4().hex[:10]}"
    port = _free_port()
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "NOWCAST_REDIS_URL": redis_url,
        "NOWCAST_REDIS_KEY_PREFIX": prefix,
        "NOWCAST_MODEL_DIR": str(model_dir),
        "NOWCAST_API_KEYS_FILE": str(keys_file),
        "NOWCAST_MAX_QUEUE_LENGTH": str(max_queue),
        # the burst measures the queue: one tenant's whole burst, all uploads at once (the
        # defaults answer 429 above half the queue and 503 above 8 concurrent uploads)
        "NOWCAST_MAX_JOBS_PER_TENANT": str(max_queue),
        "NOWCAST_MAX_CONCURRENT_UPLOADS": "256",
        "NOWCAST_WORKER_POLL_S": "0.2",
    }
    log = open(log_dir / "service.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port),
         "--workers", str(workers)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the service exited with {proc.returncode}; see {log.name}")
            try:
                if workers == 0:  # no worker heartbeat to wait for: the API alone
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        break
                ready = httpx.get(f"{url}/readyz", timeout=2)
                if ready.status_code == 200 and ready.json()["workers"] >= workers:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the service was not ready in 180 s; see {log.name}")
            time.sleep(0.5)
        yield url, keys
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(match=f"{prefix}:*", count=500):
            client.delete(key)
        client.close()


async def poll_status(
    client: httpx.AsyncClient, job_ids: list[str], rate_hz: float, duration_s: float
) -> PollFigures:
    """GET the status of `job_ids` in turn, open-loop at `rate_hz` for `duration_s`."""
    loop = asyncio.get_running_loop()
    count = int(rate_hz * duration_s)
    latencies: list[float] = []
    lags: list[float] = []
    sent_at: list[float] = []
    statuses: Counter[str] = Counter()
    start = loop.time() + 0.1

    async def one(index: int) -> None:
        scheduled = start + index / rate_hz
        await asyncio.sleep(max(0.0, scheduled - loop.time()))
        sent_at.append(loop.time())
        lags.append(sent_at[-1] - scheduled)
        try:
            response = await client.get(f"/v1/nowcasts/{job_ids[index % len(job_ids)]}")
            statuses[str(response.status_code)] += 1
        except httpx.HTTPError as exc:
            statuses[type(exc).__name__] += 1
        latencies.append(loop.time() - scheduled)

    await asyncio.gather(*(one(i) for i in range(count)))
    # the rate the requests went out at (the answers' delays are in the latencies)
    sending_s = max(sent_at) - min(sent_at)
    return PollFigures(
        target_rate_hz=rate_hz,
        duration_s=duration_s,
        requests=count,
        achieved_rate_hz=round((count - 1) / sending_s, 1),
        p50_ms=round(_percentile(latencies, 50) * 1e3, 2),
        p99_ms=round(_percentile(latencies, 99) * 1e3, 2),
        max_ms=round(max(latencies) * 1e3, 2),
        client_lag_p99_ms=round(_percentile(lags, 99) * 1e3, 2),
        statuses=dict(statuses),
    )


async def _list_all(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = (await client.get("/v1/nowcasts", params={"limit": 100, "offset": offset})).json()
        jobs += page["items"]
        offset += 100
        if offset >= page["total"]:
            return jobs


def _seconds(a: str, b: str) -> float:
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()


async def burst(
    client: httpx.AsyncClient,
    radar: bytes,
    jobs: int,
    concurrency: int,
    timeout_s: float,
    job: dict[str, Any] | None = None,
) -> BurstFigures:
    """Submit `jobs` jobs (parameters `job`, default the fast stand-in) over `concurrency`
    connections; follow them to the end."""
    params = FAST_JOB if job is None else job
    gate = asyncio.Semaphore(concurrency)
    submit_latencies: list[float] = []
    statuses: Counter[str] = Counter()
    accepted: list[str] = []

    async def submit(seed: int) -> None:
        async with gate:
            started = time.perf_counter()
            response = await client.post(
                "/v1/nowcasts",
                params={**params, "seed": seed},
                content=radar,
                headers={"Content-Type": "application/x-netcdf"},
            )
            submit_latencies.append(time.perf_counter() - started)
            statuses[f"submit {response.status_code}"] += 1
            if response.status_code == 202:
                accepted.append(response.json()["id"])

    first = time.perf_counter()
    await asyncio.gather(*(submit(seed) for seed in range(jobs)))
    submit_wall_s = time.perf_counter() - first

    deadline = time.monotonic() + timeout_s
    while True:
        listed = {job["id"]: job for job in await _list_all(client)}
        done = [listed[i] for i in accepted if listed.get(i, {}).get("status") in TERMINAL]
        if len(done) == len(accepted) or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    finished = [job for job in done if job["status"] == "successful"]
    statuses.update(f"final {job['status']}" for job in done)
    waits = [_seconds(j["created"], j["started"]) for j in finished]
    ends = [_seconds(j["created"], j["finished"]) for j in finished]
    runs = [_seconds(j["started"], j["finished"]) for j in finished]
    if finished:
        first_created = min(j["created"] for j in finished)
        span_s = _seconds(first_created, max(j["finished"] for j in finished))
    else:
        span_s = float("nan")
    return BurstFigures(
        jobs=jobs,
        accepted=len(accepted),
        completed=len(finished),
        failed=len(done) - len(finished),
        submit_wall_s=round(submit_wall_s, 2),
        submit_rate_hz=round(jobs / submit_wall_s, 1),
        submit_p50_ms=round(_percentile(submit_latencies, 50) * 1e3, 1),
        submit_p99_ms=round(_percentile(submit_latencies, 99) * 1e3, 1),
        all_done_s=round(span_s, 2),
        throughput_jobs_s=round(len(finished) / span_s, 2) if finished else 0.0,
        queue_wait_p50_s=round(_percentile(waits, 50), 3),
        queue_wait_p99_s=round(_percentile(waits, 99), 3),
        queue_wait_max_s=round(max(waits), 3) if waits else float("nan"),
        end_to_end_p50_s=round(_percentile(ends, 50), 3),
        end_to_end_p99_s=round(_percentile(ends, 99), 3),
        run_p50_s=round(_percentile(runs, 50), 3),
        statuses=dict(statuses),
    )


async def run_benchmark(url: str, keys: dict[str, str], args: argparse.Namespace) -> dict:
    radar = RADAR_64.read_bytes()
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    timeout = httpx.Timeout(60.0)

    def client(tenant: str) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {keys[tenant]}"}
        return httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=timeout)

    async with client("poll") as poller:
        # a few finished jobs to poll, so the status documents are the full ones
        targets = []
        for seed in range(4):
            response = await poller.post(
                "/v1/nowcasts",
                params={**FAST_JOB, "seed": seed},
                content=radar,
                headers={"Content-Type": "application/x-netcdf"},
            )
            response.raise_for_status()
            targets.append(response.json()["id"])
        while any(j["status"] not in TERMINAL for j in await _list_all(poller)):
            await asyncio.sleep(0.5)
        polling = await poll_status(poller, targets, args.poll_rate, args.poll_s)
    async with client("burst") as submitter:
        bursting = await burst(submitter, radar, args.jobs, args.concurrency, args.timeout_s)
    return {"polling": asdict(polling), "burst": asdict(bursting)}


STREAMS_PER_PROCESS = 250
_STREAM_KEY_ENV = "NOWCAST_LOAD_STREAM_KEY"


async def _hold_stream(
    client: httpx.AsyncClient, job_id: str, opened: list[int], stop: asyncio.Event
) -> bool:
    """One event stream held open until `stop`; True when it was still open then."""
    async with client.stream("GET", f"/v1/nowcasts/{job_id}/events") as response:
        first = asyncio.Event()

        async def read_to_the_end() -> None:
            async for line in response.aiter_lines():
                if line.startswith("data:") and not first.is_set():
                    opened[0] += 1
                    first.set()

        reading = asyncio.ensure_future(read_to_the_end())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        still_open = not reading.done()
        reading.cancel()
        stopping.cancel()
        return still_open


async def hold_streams(url: str, key: str, job_ids: list[str], count: int) -> None:
    """Child process (`--hold-streams`): hold `count` event streams over `job_ids` in turn.

    Prints `opened N` once every stream has had its first event (or after 300 s), then holds
    them until its stdin closes, then prints `open_at_end N` (streams still open then).
    """
    headers = {"Authorization": f"Bearer {key}"}
    # one connection per stream; no read timeout: a waiting job's stream may stay quiet
    limits = httpx.Limits(max_connections=count + 1, max_keepalive_connections=0)
    timeout = httpx.Timeout(60.0, read=None, pool=300.0)
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=timeout
    ) as client:
        opened, stop = [0], asyncio.Event()
        holders = [
            asyncio.create_task(_hold_stream(client, job_ids[i % len(job_ids)], opened, stop))
            for i in range(count)
        ]
        deadline = time.monotonic() + 300
        while opened[0] < count and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        print(f"opened {opened[0]}", flush=True)
        await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
        stop.set()
        results = await asyncio.gather(*holders, return_exceptions=True)
        print(f"open_at_end {sum(r is True for r in results)}", flush=True)


def _stream_holders(
    url: str, key: str, job_ids: list[str], streams: int, processes: int
) -> list[tuple[subprocess.Popen[str], int]]:
    """Start `processes` children holding `streams` event streams between them."""
    holders = []
    for index in range(processes):
        count = streams // processes + (1 if index < streams % processes else 0)
        proc = subprocess.Popen(
            [sys.executable, __file__, "--hold-streams", url, ",".join(job_ids), str(count)],
            # the key in the environment: a token may begin with "-", which argparse would take
            # for an option
            env={**os.environ, _STREAM_KEY_ENV: key},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        holders.append((proc, count))
    return holders


def _read_count(proc: subprocess.Popen[str], label: str) -> int:
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith(label):
        raise RuntimeError(f"stream holder {proc.pid} answered {line!r}, not {label!r}")
    return int(line.split()[1])


async def run_streams_benchmark(url: str, keys: dict[str, str], args: argparse.Namespace) -> dict:
    """Status polling without event streams, then while `args.streams` stay open."""
    radar = RADAR_64.read_bytes()
    headers = {"Authorization": f"Bearer {keys['poll']}"}
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=httpx.Timeout(60.0)
    ) as poller:
        targets = []
        for seed in range(4):  # no worker: they stay accepted, their streams open
            response = await poller.post(
                "/v1/nowcasts",
                params={**FAST_JOB, "seed": seed},
                content=radar,
                headers={"Content-Type": "application/x-netcdf"},
            )
            response.raise_for_status()
            targets.append(response.json()["id"])
        without = await poll_status(poller, targets, args.poll_rate, args.poll_s)
        processes = args.stream_procs or -(-args.streams // STREAMS_PER_PROCESS)
        holders = _stream_holders(url, keys["poll"], targets, args.streams, processes)
        try:
            loop = asyncio.get_running_loop()
            opened = sum(
                await asyncio.gather(
                    *(loop.run_in_executor(None, _read_count, p, "opened") for p, _ in holders)
                )
            )
            await asyncio.sleep(2.0)  # settle: every stream is now only waiting
            polling = await poll_status(poller, targets, args.poll_rate, args.poll_s)
            for proc, _ in holders:
                if proc.stdin:
                    proc.stdin.close()
            still_open = sum(
                await asyncio.gather(
                    *(loop.run_in_executor(None, _read_count, p, "open_at_end") for p, _ in holders)
                )
            )
        finally:
            for proc, _ in holders:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    return {
        "polling_without_streams": asdict(without),
        "polling": asdict(polling),
        "streams": {
            "requested": args.streams,
            "processes": processes,
            "opened": opened,
            "open_at_end": still_open,
        },
    }


def _report(figures: dict, args: argparse.Namespace) -> str:
    p, b = figures["polling"], figures["burst"]
    return "\n".join(
        [
            f"service: nowcast serve --workers {args.workers}, Redis, auth on; "
            f"{os.cpu_count()} CPU cores (1-min load average before/after "
            f"{figures['config']['load_average_1min']}); fast stand-in job {FAST_JOB} on 64x64x9",
            f"status polling: {p['requests']} GETs at {p['target_rate_hz']:g} req/s for "
            f"{p['duration_s']:g} s (achieved {p['achieved_rate_hz']} req/s): "
            f"p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms, max {p['max_ms']} ms "
            f"(client lag p99 {p['client_lag_p99_ms']} ms); {p['statuses']}",
            f"burst: {b['accepted']}/{b['jobs']} accepted in {b['submit_wall_s']} s "
            f"({b['submit_rate_hz']} submits/s, p50 {b['submit_p50_ms']} ms, "
            f"p99 {b['submit_p99_ms']} ms); {b['completed']} completed, {b['failed']} failed",
            f"  end-to-end throughput {b['throughput_jobs_s']} jobs/s (all done "
            f"{b['all_done_s']} s after the first submit); queue wait p50 "
            f"{b['queue_wait_p50_s']} s, p99 {b['queue_wait_p99_s']} s, max "
            f"{b['queue_wait_max_s']} s; end-to-end p50 {b['end_to_end_p50_s']} s, p99 "
            f"{b['end_to_end_p99_s']} s; run p50 {b['run_p50_s']} s",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="CI size: 5 s of polling, 50 jobs")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="Redis to run the queue on")
    parser.add_argument("--model-dir", type=Path, default=None, help="model folder (tiny random)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--poll-rate", type=float, default=200.0, help="status GETs per second")
    parser.add_argument("--poll-s", type=float, default=None, help="polling time [s] (30; 5)")
    parser.add_argument("--jobs", type=int, default=None, help="jobs in the burst (1000; 50)")
    parser.add_argument("--concurrency", type=int, default=32, help="client connections")
    parser.add_argument("--timeout-s", type=float, default=900.0, help="give up on the burst")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--streams", type=int, default=0, help="only status polling, with N open event streams"
    )
    parser.add_argument(
        "--stream-procs",
        type=int,
        default=0,
        help=f"client processes holding the streams (default: one per {STREAMS_PER_PROCESS})",
    )
    parser.add_argument("--hold-streams", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.hold_streams:  # a child of --streams
        url, job_ids, count = args.hold_streams
        key = os.environ[_STREAM_KEY_ENV]
        asyncio.run(hold_streams(url, key, job_ids.split(","), int(count)))
        return 0
    args.poll_s = args.poll_s or (5.0 if args.small else 30.0)
    args.jobs = args.jobs or (50 if args.small else 1000)

    model_dir = args.model_dir or _tiny_model_dir(DEFAULT_MODEL_CACHE)
    # the figures depend on what else the machine runs: report its load beside them
    load_before = os.getloadavg()[0]
    if args.streams:
        return _main_streams(args, model_dir, load_before)
    with tempfile.TemporaryDirectory(prefix="nowcast-load-") as tmp:
        with running_service(
            args.redis_url, model_dir, args.workers, args.jobs + 10, Path(tmp)
        ) as (url, keys):
            figures = asyncio.run(run_benchmark(url, keys, args))
    figures["config"] = {
        "workers": args.workers,
        "poll_rate_hz": args.poll_rate,
        "poll_s": args.poll_s,
        "jobs": args.jobs,
        "concurrency": args.concurrency,
        "job": FAST_JOB,
        "cpu_cores": os.cpu_count(),
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    print(_report(figures, args))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    burst_ok = figures["burst"]["completed"] == args.jobs
    # status keys look like "200", "submit 202", "final successful"
    no_5xx = not any(
        status.split()[-1].startswith("5")
        for part in ("polling", "burst")
        for status in figures[part]["statuses"]
    )
    return 0 if burst_ok and no_5xx else 1


def _main_streams(args: argparse.Namespace, model_dir: Path, load_before: float) -> int:
    with tempfile.TemporaryDirectory(prefix="nowcast-load-") as tmp:
        with running_service(args.redis_url, model_dir, 0, 100, Path(tmp)) as (url, keys):
            figures = asyncio.run(run_streams_benchmark(url, keys, args))
    p, p0, s = figures["polling"], figures["polling_without_streams"], figures["streams"]
    load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    figures["config"] = {"cpu_cores": os.cpu_count(), "load_average_1min": load}

    def polled(p: dict) -> str:
        return (
            f"{p['requests']} GETs at {p['target_rate_hz']:g} req/s for {p['duration_s']:g} s "
            f"(achieved {p['achieved_rate_hz']} req/s): p50 {p['p50_ms']} ms, p99 "
            f"{p['p99_ms']} ms, max {p['max_ms']} ms (client lag p99 "
            f"{p['client_lag_p99_ms']} ms); {p['statuses']}"
        )

    print(
        f"API alone, Redis, auth on; {os.cpu_count()} CPU cores, 1-min load average "
        f"before/after {load}\n"
        f"status polling, no event stream open: {polled(p0)}\n"
        f"status polling with {s['open_at_end']}/{s['requested']} event streams open "
        f"({s['opened']} opened, held by {s['processes']} client processes): {polled(p)}"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    no_5xx = not any(status.startswith("5") for q in (p, p0) for status in q["statuses"])
    return 0 if no_5xx and s["open_at_end"] == s["requested"] else 1


if __name__ == "__main__":
    sys.exit(main())
