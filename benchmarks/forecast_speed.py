"""Forecast speed: the shipped model against pySTEPS STEPS on the same input, in the same run.

One 20-member, 12-frame forecast of a 256x256 crop (the first protocol case of a radar event,
`models.evaluation.cases`) with the model and with STEPS at the protocol's settings
(`models.evaluation.baselines.steps`, LK motion included). Prints both wall-clock times and
model / STEPS (goal <= 1.0). Model loading is timed apart and not counted.

    python benchmarks/forecast_speed.py [--weights DIR] [--data FILE.nc] [--case ID]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere in the checkout

from models.evaluation import baselines  # noqa: E402
from models.evaluation.cases import iter_cases  # noqa: E402
from models.metadata import DEFAULT_MODEL_DIR  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "radar" / "mch_20150515.nc"
MEMBERS = 20
LEADS = 12


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_MODEL_DIR, help="model folder")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="radar event file")
    parser.add_argument("--case", default=None, help="case id (default: the file's first)")
    parser.add_argument("--members", type=int, default=MEMBERS)
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (model default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "float32", "bfloat16"],
        help="denoiser compute dtype (auto: bfloat16 where the CPU has it natively)",
    )
    parser.add_argument(
        "--warmup", action="store_true", help="run the model once untimed before timing it"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    case = next(c for c in iter_cases(args.data) if args.case in (None, c.case_id))
    print(f"input: {case.case_id}, past {case.past.shape}, {LEADS} leads, {args.members} members")
    print(f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")

    from models.pipeline import NowcastPipeline

    start = time.perf_counter()
    pipeline = NowcastPipeline.from_model_dir(args.weights, denoiser_precision=args.precision)
    load_s = time.perf_counter() - start
    if pipeline.config.frames_out != LEADS:
        print(f"note: the model forecasts {pipeline.config.frames_out} frames, not {LEADS}")
    if args.warmup:
        pipeline.forecast(case.past, members=args.members, steps=args.steps, seed=args.seed)

    start, start_cpu = time.perf_counter(), time.process_time()
    forecast = pipeline.forecast(case.past, members=args.members, steps=args.steps, seed=args.seed)
    model_s, model_cpu_s = time.perf_counter() - start, time.process_time() - start_cpu

    start, start_cpu = time.perf_counter(), time.process_time()
    steps_forecast = baselines.steps(
        case.past,
        LEADS,
        interval_s=case.interval_s,
        pixel_size_km=case.pixel_size_km,
        members=args.members,
        seed=baselines.STEPS_SEED,
    )
    steps_s, steps_cpu_s = time.perf_counter() - start, time.process_time() - start_cpu

    ratio = model_s / steps_s
    precision = pipeline.denoiser_precision
    print(
        f"model load:            {load_s:8.2f} s  ({args.weights}; denoiser {precision}, "
        f"decoder {pipeline.decoder_backend})"
    )
    # CPU seconds (all threads) beside wall time: the machine may be shared
    print(
        f"model forecast:        {model_s:8.2f} s  (cpu {model_cpu_s:.2f} s)  "
        f"output {tuple(forecast.shape)}"
    )
    print(
        f"pySTEPS STEPS (+LK):   {steps_s:8.2f} s  (cpu {steps_cpu_s:.2f} s)  "
        f"output {tuple(steps_forecast.shape)}"
    )
    print(
        f"ratio model / STEPS:   {ratio:8.2f}  (goal <= 1.0: {'met' if ratio <= 1 else 'not met'})"
    )
    if args.json is not None:
        figures = {
            "case": case.case_id,
            "members": args.members,
            "leads": LEADS,
            "steps": args.steps or pipeline.config.diffusion.sampling_steps,
            "denoiser_precision": precision,
            "decoder": pipeline.decoder_backend,
            "model_load_s": load_s,
            "model_forecast_s": model_s,
            "steps_forecast_s": steps_s,
            "model_forecast_cpu_s": model_cpu_s,
            "steps_forecast_cpu_s": steps_cpu_s,
            "ratio": ratio,
            "warmup": args.warmup,
            "cpu_count": os.cpu_count(),
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
