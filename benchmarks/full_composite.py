"""A whole agency composite: the shipped model (tiled) against pySTEPS STEPS, same input, one run.

Reads a radar event file as the service does (`read_radar_netcdf`: the last 30 min of frames,
brought to the model's interval and pixel), then times one ensemble forecast of the whole grid
with the model (motion, tiles, decoding included; loading not counted) and with STEPS at the
protocol's settings (`models.evaluation.baselines.steps`, LK motion included, as many dask workers
as there are usable cores) on the same frames.
Each method runs in its own process, so that its peak resident memory (`ru_maxrss`) is its own.
Prints one JSON object: seconds and peak MiB of both, and the model / STEPS time ratio.

    python benchmarks/full_composite.py                       # FMI 1226 x 760, 20 members
    python benchmarks/full_composite.py --members 2 --steps 1 --crop 320   # a quick check
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere in the checkout

DEFAULT_DATA = REPO.parent / "shared" / "data" / "radar" / "fmi_20170509.nc"


def _past(data: Path, crop: int | None) -> Any:
    """`(7, H, W)` float32 [mm h-1] on the model's grid, as the worker gives the pipeline."""
    from models.metadata import DEFAULT_MODEL_DIR, read_model_metadata
    from service.netcdf_io import read_radar_netcdf

    config = read_model_metadata(DEFAULT_MODEL_DIR).config
    past = read_radar_netcdf(data.read_bytes(), config).model_rain_mm_h
    return past[:, :crop, :crop] if crop else past


def _run(method: str, args: argparse.Namespace, out: Any) -> None:
    """Child process: one forecast; sends back seconds and peak RSS [MiB]."""
    import numpy as np

    past = _past(args.data, args.crop)
    if method == "model":
        from models.metadata import DEFAULT_MODEL_DIR
        from models.pipeline import NowcastPipeline

        pipeline = NowcastPipeline.from_model_dir(args.weights or DEFAULT_MODEL_DIR)
        started = time.perf_counter()
        forecast = pipeline.forecast(past, members=args.members, steps=args.steps, seed=0)
    else:
        from models.evaluation import baselines

        started = time.perf_counter()
        from service.threads import available_cores

        # as many dask workers as the model's threads use cores (issue 14's fair reference)
        forecast = baselines.steps(
            np.nan_to_num(past), 12, members=args.members, num_workers=available_cores()
        )
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    out.put({"seconds": round(seconds, 2), "peak_mib": round(peak_mib), "shape": forecast.shape})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (model default)")
    parser.add_argument("--crop", type=int, default=None, help="top-left crop [px], for a check")
    args = parser.parse_args(argv)
    context = multiprocessing.get_context("spawn")  # a fresh process: its own peak memory
    results: dict[str, Any] = {}
    for method in ("model", "steps"):
        queue = context.Queue()
        child = context.Process(target=_run, args=(method, args, queue))
        child.start()
        results[method] = queue.get()
        child.join()
    print(
        json.dumps(
            {
                "data": args.data.name,
                "grid": list(results["model"]["shape"][-2:]),
                "members": args.members,
                "model": {k: v for k, v in results["model"].items() if k != "shape"},
                "steps": {k: v for k, v in results["steps"].items() if k != "shape"},
                "time_ratio_model_over_steps": round(
                    results["model"]["seconds"] / results["steps"]["seconds"], 2
                ),
                "machine": f"{platform.machine()}, {multiprocessing.cpu_count()} CPUs",
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
