"""Forecast speed, measured fairly: the shipped model against pySTEPS STEPS on the same cores.

Both sides time the whole job a user gets, in the same process, on the same input:

    NetCDF bytes -> read and validate (service.radar_input) -> forecast (motion estimation
    included) -> products + NetCDF file (service.forecast_output)

The reference is STEPS with as many dask workers as the model has threads (`--threads`, default
all the cores this process may use: `service.threads`), 20 members at the protocol's settings;
LK extrapolation and S-PROG run too, for context. Each method gets one untimed warm-up, then
`--runs` timed runs; the report gives every run, the medians, model / STEPS per run and of the
medians, the load average, and each method's peak RSS while it ran (sampled from /proc, so
torch's and ONNX Runtime's native memory count too).

    python benchmarks/forecast_speed.py [--input FILE.nc] [--crop PX] [--runs 3] [--json F]

`--input` is a radar NetCDF as a user posts it (default: the README sample, 256 x 256);
`--crop PX` first cuts the central PX x PX of its last frames (e.g. 512 from the shared
MeteoSwiss event) to time larger grids.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xarray as xr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere in the checkout

from models.evaluation import baselines  # noqa: E402
from models.metadata import DEFAULT_MODEL_DIR  # noqa: E402
from service.forecast_output import write_forecast_netcdf  # noqa: E402
from service.radar_input import RadarInput, read_radar_netcdf  # noqa: E402
from service.threads import apply_torch_threads, available_cores  # noqa: E402

DEFAULT_INPUT = REPO / "examples" / "mch_20150515_256.nc"
MEMBERS = 20

Forecast = Callable[[RadarInput], np.ndarray]


class PeakRss:
    """Peak resident memory of this process while the block runs [MB] (polls /proc)."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    @staticmethod
    def current_mb() -> float:
        # VmRSS, not ru_maxrss: the latter is the process's all-time peak and cannot be reset
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_mb = max(self.peak_mb, self.current_mb())

    def __enter__(self) -> PeakRss:
        self.peak_mb = self.current_mb()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self.current_mb())


def input_bytes(path: Path, crop: int | None, frames: int) -> bytes:
    """The input file as a user posts it, or the central `crop` px of its last `frames`."""
    if crop is None:
        return path.read_bytes()
    with xr.open_dataset(path, decode_times=False) as ds:
        rows, cols = [d for d in ds.dims if d not in ("time",)][-2:]
        top = (ds.sizes[rows] - crop) // 2
        left = (ds.sizes[cols] - crop) // 2
        if top < 0 or left < 0:
            raise SystemExit(f"{path} is smaller than --crop {crop}")
        cut = ds.isel(
            time=slice(-frames, None),
            **{rows: slice(top, top + crop), cols: slice(left, left + crop)},
        ).load()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "input.nc"
        cut.to_netcdf(path)  # NetCDF-4, as agencies post it (in-memory writes are NetCDF-3)
        return path.read_bytes()


def job(data: bytes, config: object, forecast: Forecast, interval_s: int) -> int:
    """One user job: read, forecast, write; returns the file's size [bytes]."""
    radar = read_radar_netcdf(data, config)  # type: ignore[arg-type]
    members = forecast(radar)
    out = write_forecast_netcdf(
        radar.to_input_grid(members),
        radar,
        interval_s=interval_s,
        attrs={"model_name": "benchmark", "model_version": "-", "job_id": "benchmark"},
    )
    return len(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_MODEL_DIR, help="model folder")
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT, help="radar NetCDF file")
    parser.add_argument("--crop", type=int, default=None, help="central crop side [px]")
    parser.add_argument("--members", type=int, default=MEMBERS)
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (model default)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per method")
    parser.add_argument(
        "--threads", type=int, default=None, help="threads / STEPS workers (default: all cores)"
    )
    parser.add_argument(
        "--methods",
        default="model,steps,extrapolation,sprog",
        help="comma-separated subset of model, steps, extrapolation, sprog",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    threads = args.threads or available_cores()
    apply_torch_threads(threads)
    from models.pipeline import NowcastPipeline

    start = time.perf_counter()
    pipeline = NowcastPipeline.from_model_dir(args.weights, codec_threads=threads)
    load_s = time.perf_counter() - start
    config = pipeline.config
    data = input_bytes(args.input, args.crop, config.frames_in)
    leads, interval_s = config.frames_out, config.interval_s
    pixel_km = config.pixel_size_m / 1000

    def model(radar: RadarInput) -> np.ndarray:
        return pipeline.forecast(
            radar.model_rain_mm_h, members=args.members, steps=args.steps, seed=0
        )

    def baseline(name: str, members: int, **extra: int) -> Forecast:
        method = baselines.get_method(name)

        def run(radar: RadarInput) -> np.ndarray:
            return method(
                radar.model_rain_mm_h,
                leads,
                interval_s=interval_s,
                pixel_size_km=pixel_km,
                members=members,
                seed=baselines.STEPS_SEED,
                **extra,
            )

        return run

    methods: dict[str, Forecast] = {
        "model": model,
        "steps": baseline("steps", args.members, num_workers=threads),
        "extrapolation": baseline("extrapolation", 1),
        "sprog": baseline("sprog", 1),
    }
    wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
    load_before = os.getloadavg()
    radar = read_radar_netcdf(data, config)
    print(
        f"input: {args.input.name}{f' (central {args.crop} px)' if args.crop else ''}, "
        f"grid {radar.rain_mm_h.shape[1:]}, {leads} leads, {args.members} members; "
        f"{threads} threads for the model, {threads} workers for STEPS"
    )
    print(f"cpu: {platform.processor() or platform.machine()}, {available_cores()} usable cores")
    print(
        f"model: {args.weights.name}, load {load_s:.1f} s, steps "
        f"{args.steps or config.diffusion.sampling_steps}, denoiser "
        f"{pipeline.denoiser_precision}, decoder {pipeline.decoder_backend}"
    )

    figures: dict[str, dict[str, object]] = {}
    for name in wanted:
        forecast = methods[name]
        with PeakRss() as rss:
            job(data, config, forecast, interval_s)  # warm-up: first-call costs, dask start
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                size = job(data, config, forecast, interval_s)
                times.append(time.perf_counter() - start)
        figures[name] = {
            "runs_s": times,
            "median_s": statistics.median(times),
            "peak_rss_mb": rss.peak_mb,
            "file_mb": size / 1e6,
        }
        runs = ", ".join(f"{t:.2f}" for t in times)
        print(
            f"{name:14s} median {statistics.median(times):7.2f} s  (runs {runs})  "
            f"peak RSS {rss.peak_mb:7.0f} MB  file {size / 1e6:.1f} MB"
        )
    load_after = os.getloadavg()
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    summary: dict[str, object] = {
        "input": str(args.input),
        "crop_px": args.crop,
        "members": args.members,
        "threads": threads,
        "steps": args.steps or config.diffusion.sampling_steps,
        "load_average_before_after": [load_before[0], load_after[0]],
        "methods": figures,
    }
    if "model" in figures and "steps" in figures:
        model_runs, steps_runs = figures["model"]["runs_s"], figures["steps"]["runs_s"]
        per_run = [m / s for m, s in zip(model_runs, steps_runs, strict=True)]  # type: ignore[call-overload]
        ratio = figures["model"]["median_s"] / figures["steps"]["median_s"]  # type: ignore[operator]
        summary["ratio_model_over_steps"] = ratio
        summary["ratio_per_run"] = per_run
        print(
            f"model / STEPS: {ratio:.2f} (per run {', '.join(f'{r:.2f}' for r in per_run)}; "
            f"goal <= 0.5: {'met' if ratio <= 0.5 else 'not met'})"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
