"""Peak worker memory of one job, against what admission control estimates for it.

Each case runs in a fresh child process that does what a worker does with one job: read and
validate the input NetCDF (`service.radar_input`), `forecast_batch` with the shipped model, then
products + NetCDF file (`service.forecast_output`). The child reports the kernel's peak resident
set (`VmHWM`) of the whole process (torch's and ONNX Runtime's native memory included), after the
model load and per stage (the peak is reset between stages through `/proc/self/clear_refs`), and
the result's size. The parent sets these beside `service.admission.estimate_job`.

    python benchmarks/worker_memory.py [--case MEMBERSxPX ...] [--steps 2] [--json F]

Default cases: 20 members at 256 x 256 and at 512 x 512 (default products), and the largest job
that admission accepts with the default settings (`largest_admitted`: the most members x pixels
whose estimate is within `worker_memory_bytes` and `max_result_bytes`, default products, on the
grids 256, 512, 1024, 2048 px). Memory does not grow with the sampler steps (each step
overwrites the state), so the default of 2 steps measures the peak of a 20-step job in a tenth of
the time. Inputs above 256 px are the README sample tiled (mirrored) to the size, so that they
carry real rain structure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere in the checkout

from service.admission import estimate_job  # noqa: E402
from service.forecast_output import (  # noqa: E402
    DEFAULT_PERCENTILES,
    DEFAULT_PRODUCTS,
    DEFAULT_THRESHOLDS_MM_H,
)
from service.queue.jobs import JobParams  # noqa: E402
from service.settings import Settings  # noqa: E402

SAMPLE = REPO / "examples" / "mch_20150515_256.nc"
GRIDS_PX = (256, 512, 1024, 2048)
MAX_MEMBERS = 64
FRAMES_OUT = 12  # small-v3; checked against the model in the child


def params(members: int, steps: int) -> JobParams:
    """A job's parameters with the API's defaults for everything but members and steps."""
    return JobParams(
        members=members,
        steps=steps,
        seed=0,
        constraint=None,
        products=DEFAULT_PRODUCTS,
        thresholds_mm_h=DEFAULT_THRESHOLDS_MM_H,
        percentiles=DEFAULT_PERCENTILES,
    )


def largest_admitted(settings: Settings) -> tuple[int, int]:
    """(members, px) of the job with the most members x pixels that default admission accepts."""
    best = (0, 0)
    for px in GRIDS_PX:
        for members in range(MAX_MEMBERS, 0, -1):
            estimate = estimate_job(params(members, 20), px, px, FRAMES_OUT)
            if (
                estimate.result_bytes <= settings.max_result_bytes
                and estimate.worker_peak_bytes <= settings.worker_memory_bytes
            ):
                if members * px * px > best[0] * best[1] ** 2:
                    best = (members, px)
                break
    if best == (0, 0):
        raise SystemExit("admission accepts none of the grids with the default settings")
    return best


def input_bytes(px: int) -> bytes:
    """The README sample as posted, or mirrored-tiled to `px` x `px` (1 km pixels kept)."""
    if px == 256:
        return SAMPLE.read_bytes()
    with xr.open_dataset(SAMPLE) as ds:
        ds = ds.load()
    reps = -(-px // 256)
    field = ds["precip"].values
    # mirrored tiles: no jumps in the rain field at the tile borders
    row = np.concatenate([field if i % 2 == 0 else field[:, :, ::-1] for i in range(reps)], 2)
    grid = np.concatenate([row if i % 2 == 0 else row[:, ::-1] for i in range(reps)], 1)
    grid = grid[:, :px, :px]
    y0, x0 = float(ds.y[0]), float(ds.x[0])
    dy, dx = float(ds.y[1] - ds.y[0]), float(ds.x[1] - ds.x[0])
    tiled = ds.drop_vars("precip").drop_dims(["y", "x"], errors="ignore")
    tiled = tiled.assign_coords(
        y=("y", y0 + dy * np.arange(px), ds.y.attrs), x=("x", x0 + dx * np.arange(px), ds.x.attrs)
    )
    tiled["precip"] = (("time", "y", "x"), grid, ds["precip"].attrs)
    encoding = {"precip": {k: v for k, v in ds["precip"].encoding.items() if k in _KEEP}}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "input.nc"
        tiled.to_netcdf(path, encoding=encoding)
        return path.read_bytes()


_KEEP = ("dtype", "_FillValue", "zlib", "complevel", "least_significant_digit")


# ---------------------------------------------------------------------- child


def _hwm_bytes() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]


def _reset_hwm() -> None:
    # "5" resets the peak RSS to the current RSS (Linux >= 4.0)
    Path("/proc/self/clear_refs").write_text("5")


def run_case(members: int, px: int, steps: int, threads: int) -> dict[str, Any]:
    """One job as a worker runs it, in this (fresh) process; peaks in bytes."""
    from models.pipeline import ForecastRequest, NowcastPipeline
    from service.forecast_output import write_forecast_netcdf
    from service.radar_input import read_radar_netcdf
    from service.threads import apply_torch_threads

    apply_torch_threads(threads)
    data = input_bytes(px)
    model_dir = REPO / "models" / "weights" / "small-v3"
    pipeline = NowcastPipeline.from_model_dir(model_dir, codec_threads=threads)
    assert pipeline.config.frames_out == FRAMES_OUT
    job = params(members, steps)
    loaded = _hwm_bytes()
    _reset_hwm()
    started = time.monotonic()
    radar = read_radar_netcdf(data, pipeline.config)
    request = ForecastRequest(radar.model_rain_mm_h, members=members, steps=steps, seed=0)
    forecast = pipeline.forecast_batch([request])[0]
    forecast_peak = _hwm_bytes()
    forecast_s = time.monotonic() - started
    _reset_hwm()
    started = time.monotonic()
    result = write_forecast_netcdf(
        radar.to_input_grid(forecast),
        radar,
        interval_s=pipeline.config.interval_s,
        thresholds_mm_h=job.thresholds_mm_h,
        products=job.products,
        percentiles=job.percentiles,
        attrs={"job_id": "benchmark", "steps": steps, "seed": 0},
        overwrite_input=True,  # as the worker does
    )
    return {
        "members": members,
        "px": px,
        "steps": steps,
        "threads": threads,
        "decoder": pipeline.decoder_backend,
        "after_load_bytes": loaded,
        "forecast_peak_bytes": forecast_peak,
        "forecast_s": round(forecast_s, 1),
        "output_peak_bytes": _hwm_bytes(),
        "output_s": round(time.monotonic() - started, 1),
        "result_bytes": len(result),
    }


# ---------------------------------------------------------------------- parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", action="append", help="MEMBERSxPX, e.g. 20x512 (repeatable)")
    parser.add_argument("--steps", type=int, default=2, help="sampler steps (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="compute threads (default 1)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        members, px = (int(v) for v in args.child.split("x"))
        print(json.dumps(run_case(members, px, args.steps, args.threads)))
        return 0

    settings = Settings()
    cases = [(c, tuple(int(v) for v in c.split("x"))) for c in args.case or ("20x256", "20x512")]
    if not args.case:
        members, px = largest_admitted(settings)
        cases.append(("largest_admitted", (members, px)))
    rows = []
    for label, (members, px) in cases:
        child = subprocess.run(
            [sys.executable, __file__, "--child", f"{members}x{px}", "--steps", str(args.steps)]
            + ["--threads", str(args.threads)],
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": str(args.threads)},
        )
        if child.returncode != 0:
            print(child.stderr[-3000:], file=sys.stderr)
            return 1
        row = json.loads(child.stdout.strip().splitlines()[-1])
        estimate = estimate_job(params(members, 20), px, px, FRAMES_OUT)
        row |= {
            "case": label,
            "estimate_worker_peak_bytes": estimate.worker_peak_bytes,
            "estimate_result_bytes": estimate.result_bytes,
        }
        peak = max(row["after_load_bytes"], row["forecast_peak_bytes"], row["output_peak_bytes"])
        row["peak_bytes"] = peak
        rows.append(row)
        print(
            f"{label:>16}: {members} members x {px}^2: peak RSS {peak / 2**20:,.0f} MiB "
            f"(model loaded {row['after_load_bytes'] / 2**20:,.0f}, forecast "
            f"{row['forecast_peak_bytes'] / 2**20:,.0f} in {row['forecast_s']} s, products + "
            f"file {row['output_peak_bytes'] / 2**20:,.0f} in {row['output_s']} s); "
            f"estimate {estimate.worker_peak_bytes / 2**20:,.0f} MiB; result "
            f"{row['result_bytes'] / 1e6:,.1f} MB (estimate {estimate.result_bytes / 1e6:,.1f})",
            flush=True,
        )
    report = {
        "command": " ".join(sys.argv),
        "worker_memory_bytes": settings.worker_memory_bytes,
        "max_result_bytes": settings.max_result_bytes,
        "cases": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
