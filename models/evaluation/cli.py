"""`nowcast evaluate`: score the model and the baselines on radar events (BASELINES.md protocol).

Builds the protocol's cases from the given CF-NetCDF event files, runs every method on each case in
the same process, prints one table per case, the mean over cases and the per-lead CSI@1 and
wet-pixel fractions, and optionally writes the scores as JSON. `--alignment-report` adds the
knowledge-alignment experiment: the model with the target mean rain rate set to half, once and
twice the true future mean, against no guidance.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.evaluation import baselines
from models.evaluation.cases import CROP_PX, FRAMES_OUT, Case, NoCasesError, iter_cases
from models.evaluation.report import (
    format_alignment,
    format_per_lead,
    format_table,
    json_number,
    mean_over_cases,
    mean_per_lead_over_cases,
)
from models.evaluation.scoring import MEMBER_SUFFIX, per_lead_scores, score_forecast
from models.metadata import DEFAULT_MODEL_DIR

MODEL = "model"
ALL_METHODS = (MODEL, "persistence", "extrapolation", "sprog", "steps")
ALIGNMENT_TARGET_FACTORS = (0.5, 1.0, 2.0)

# forecast(past_mm_h (T, H, W), n_leads, members, seed) -> (M, n_leads, H, W) mm/h
Forecaster = Callable[[np.ndarray, int, int, int], np.ndarray]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nowcast evaluate",
        description="Score the model and baselines on radar events with the protocol of "
        "shared/BASELINES.md (7 past -> 12 future frames, 256x256 crops).",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        default=DEFAULT_MODEL_DIR,
        help="model folder (default: the shipped model, %(default)s)",
    )
    parser.add_argument(
        "--data", type=Path, nargs="+", required=True, help="CF-NetCDF radar event files"
    )
    parser.add_argument("--members", type=int, default=20, help="ensemble members (default 20)")
    parser.add_argument(
        "--steps", type=int, default=None, help="model sampler steps (default: the model's)"
    )
    parser.add_argument(
        "--methods",
        default=None,
        help=f"comma-separated subset of {','.join(ALL_METHODS)} (default: all)",
    )
    parser.add_argument("--cases", default=None, help="comma-separated case ids to keep")
    parser.add_argument("--seed", type=int, default=0, help="model seed and rank-histogram ties")
    parser.add_argument("--json", type=Path, default=None, help="write the scores here as JSON")
    parser.add_argument(
        "--target-mm-h",
        type=float,
        default=None,
        help="run the model with knowledge-alignment guidance towards this future mean [mm h-1]",
    )
    parser.add_argument(
        "--guidance-scale",
        type=float,
        default=None,
        help="guidance lambda for --target-mm-h and the alignment report "
        "(default: the model's diffusion.guidance_scale)",
    )
    parser.add_argument(
        "--alignment-report",
        action="store_true",
        help="also run the model guided to 0.5, 1 and 2 times the true future mean; print the "
        "relative error of the forecast mean and the CRPS cost against no guidance",
    )
    parser.add_argument(
        "--no-member-rows", action="store_true", help="skip the <method>_member rows"
    )
    parser.add_argument(
        "--crop-px",
        type=int,
        default=CROP_PX,
        help="crop side in pixels (default %(default)s = the protocol; smaller for quick checks)",
    )
    return parser


def _select_methods(spec: str | None) -> list[str]:
    if spec is None:
        return list(ALL_METHODS)
    methods = [m.strip() for m in spec.split(",") if m.strip()]
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(ALL_METHODS)}")
    return methods


class ModelForecaster:
    """The model of a folder behind the harness's forecaster signature (loaded once).

    guidance_scale: lambda of the knowledge-alignment guidance for constrained forecasts
    (None = the model's `diffusion.guidance_scale`); it becomes the constraint's strength.
    """

    def __init__(self, weights: Path, steps: int | None, guidance_scale: float | None) -> None:
        from models.pipeline import NowcastPipeline

        self.pipeline = NowcastPipeline.from_model_dir(weights)
        self.steps = steps
        model_scale = float(self.pipeline.config.diffusion.guidance_scale)
        if guidance_scale is None:
            self.strength = 1.0
        elif model_scale > 0:
            self.strength = guidance_scale / model_scale
        else:
            raise ValueError("the model's guidance_scale is 0; --guidance-scale cannot rescale it")

    @property
    def frames_out(self) -> int:
        return int(self.pipeline.config.frames_out)

    def __call__(
        self,
        past_mm_h: np.ndarray,
        n_leads: int,
        members: int,
        seed: int,
        target_mm_h: float | None = None,
    ) -> np.ndarray:
        """(`(members, n_leads, H, W)` float32) [mm h-1] from past (`(T, H, W)`) [mm h-1]."""
        from models.pipeline import IntensityConstraint

        constraint = None
        if target_mm_h is not None:
            constraint = IntensityConstraint(target_mm_h=target_mm_h, strength=self.strength)
        forecast = self.pipeline.forecast(
            past_mm_h, members=members, steps=self.steps, seed=seed, constraint=constraint
        )
        return np.asarray(forecast, dtype=np.float32)[:, :n_leads]


def _baseline_forecaster(name: str, case: Case) -> Forecaster:
    method = baselines.get_method(name)

    def forecast(past: np.ndarray, n_leads: int, members: int, seed: int) -> np.ndarray:
        if name == "steps":
            # the protocol fixes STEPS at 20 members, seed 42 whatever the model runs with
            members, seed = baselines.STEPS_MEMBERS, baselines.STEPS_SEED
        return method(
            past,
            n_leads,
            interval_s=case.interval_s,
            pixel_size_km=case.pixel_size_km,
            members=members,
            seed=seed,
        )

    return forecast


def _timed(forecast: Callable[..., np.ndarray], *args: Any) -> tuple[np.ndarray, float]:
    """`forecast(*args)` and its wall-clock time [s]."""
    start = time.perf_counter()
    result = forecast(*args)
    return result, time.perf_counter() - start


def _alignment_rows(
    model: ModelForecaster,
    case: Case,
    n_leads: int,
    members: int,
    seed: int,
    unguided: np.ndarray,
    unguided_crps: float,
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    observed = case.future[:n_leads]
    true_mean = float(observed.mean())
    unguided_mean = float(unguided.mean())
    rows = []
    for factor in ALIGNMENT_TARGET_FACTORS:
        target = factor * true_mean
        guided, runtime = _timed(model, case.past, n_leads, members, seed, target)
        guided_crps = score_forecast(guided, observed, rng, case.pixel_size_km, False)[""]["CRPS"]
        rows.append(
            {
                "case": case.case_id,
                "target_factor": factor,
                "target_mm_h": target,
                "unguided_mean_mm_h": unguided_mean,
                "guided_mean_mm_h": float(guided.mean()),
                "rel_error_unguided": _relative_error(unguided_mean, target),
                "rel_error_guided": _relative_error(float(guided.mean()), target),
                "CRPS_unguided": unguided_crps,
                "CRPS_guided": guided_crps,
                "runtime_s": runtime,
            }
        )
    return rows


def _relative_error(value: float, target: float) -> float:
    return abs(value - target) / target if target > 0 else float("nan")


def _load_cases(paths: Sequence[Path], wanted: set[str] | None, crop_px: int) -> list[Case]:
    cases: list[Case] = []
    for path in paths:
        try:
            file_cases = [
                c
                for c in iter_cases(path, crop_px=crop_px)
                if wanted is None or c.case_id in wanted
            ]
        except NoCasesError as error:
            print(f"skipped: {error}", file=sys.stderr)
            continue
        cases.extend(file_cases)
    return cases


def _evaluate_case(
    case: Case,
    methods: list[str],
    model: ModelForecaster | None,
    n_leads: int,
    args: argparse.Namespace,
    rng: np.random.Generator,
) -> tuple[list[dict[str, Any]], np.ndarray | None]:
    """Score every method on one case: its JSON records and the model's forecast (if run).

    The main record of a method (suffix "") also carries `"per_lead"`: `per_lead_scores` of the
    forecast, for the acceptance bars that must hold at every lead.
    """
    observed = case.future[:n_leads]
    records: list[dict[str, Any]] = []
    model_forecast = None
    for method in methods:
        if method == MODEL:
            assert model is not None
            forecast, runtime = _timed(
                model, case.past, n_leads, args.members, args.seed, args.target_mm_h
            )
            model_forecast = forecast
        else:
            forecaster = _baseline_forecaster(method, case)
            forecast, runtime = _timed(forecaster, case.past, n_leads, args.members, args.seed)
        rows = score_forecast(forecast, observed, rng, case.pixel_size_km, not args.no_member_rows)
        for suffix, scores in rows.items():
            record = {
                "case": case.case_id,
                "method": method + suffix,
                "scores": scores,
                "runtime_s": runtime,
            }
            if suffix == "":
                record["per_lead"] = per_lead_scores(forecast, observed)
            records.append(record)
    return records, model_forecast


def _json_lists(lists: dict[str, list[float]]) -> dict[str, list[float | None]]:
    return {name: [json_number(v) for v in values] for name, values in lists.items()}


def run_evaluation(args: argparse.Namespace) -> dict[str, Any]:
    """Run every method on every case; print the tables; return the JSON document."""
    methods = _select_methods(args.methods)
    wanted = {c.strip() for c in args.cases.split(",")} if args.cases else None
    cases = _load_cases(args.data, wanted, args.crop_px)
    if wanted is not None and (missing := wanted - {c.case_id for c in cases}):
        raise ValueError(
            f"case id(s) not found in the given files: {sorted(missing)} "
            "(ids are <source>_<YYYYMMDD_HHMM of the last past frame>)"
        )
    if not cases:
        raise ValueError("no protocol cases in the given files (see the messages above)")

    model = None
    n_leads = FRAMES_OUT
    if MODEL in methods or args.alignment_report:
        model = ModelForecaster(args.weights, args.steps, args.guidance_scale)
        if model.frames_out < FRAMES_OUT:
            n_leads = model.frames_out
            print(
                f"note: the model forecasts {n_leads} frames; every method is scored on the "
                f"first {n_leads} leads (the protocol has {FRAMES_OUT})",
                file=sys.stderr,
            )

    rng = np.random.default_rng(args.seed)
    records: list[dict[str, Any]] = []
    alignment: list[dict[str, Any]] = []
    for case in cases:
        case_records, model_forecast = _evaluate_case(case, methods, model, n_leads, args, rng)
        records.extend(case_records)
        table_rows = [(r["method"], r["scores"], r["runtime_s"]) for r in case_records]
        print(format_table(table_rows, f"case {case.case_id}") + "\n", flush=True)
        if args.alignment_report:
            assert model is not None
            if model_forecast is None or args.target_mm_h is not None:
                # the reference is the unguided model
                model_forecast = model(case.past, n_leads, args.members, args.seed)
            scores = score_forecast(model_forecast, case.future[:n_leads], rng, member_row=False)
            alignment.extend(
                _alignment_rows(
                    model,
                    case,
                    n_leads,
                    args.members,
                    args.seed,
                    model_forecast,
                    scores[""]["CRPS"],
                    rng,
                )
            )

    means = mean_over_cases(records)
    mean_rows = [(m, s, s["runtime_s"]) for m, s in means.items()]
    print(format_table(mean_rows, f"mean over {len(cases)} cases"))
    means_per_lead = mean_per_lead_over_cases(records)
    print("\n" + format_per_lead(means_per_lead, f"per lead, mean over {len(cases)} cases"))
    if alignment:
        print("\n" + format_alignment(alignment))

    document: dict[str, Any] = {
        "cases": [
            {
                "case": r["case"],
                "method": r["method"],
                "scores": {k: json_number(v) for k, v in r["scores"].items()},
                "runtime_s": r["runtime_s"],
                # only on a method's main record, not on its `_member` row
                **({"per_lead": _json_lists(r["per_lead"])} if "per_lead" in r else {}),
            }
            for r in records
        ],
        "mean": {m: {k: json_number(v) for k, v in s.items()} for m, s in means.items()},
        "mean_per_lead": {m: _json_lists(lists) for m, lists in means_per_lead.items()},
        "settings": {
            "members": args.members,
            "steps": args.steps,
            "seed": args.seed,
            "n_leads": n_leads,
            "crop_px": args.crop_px,
            "methods": methods,
            "weights": str(args.weights) if model is not None else None,
            "data": [str(p) for p in args.data],
            "member_rows_suffix": MEMBER_SUFFIX,
        },
    }
    if alignment:
        document["alignment"] = [
            {k: json_number(v) if isinstance(v, float) else v for k, v in row.items()}
            for row in alignment
        ]
    return document


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.members < 1:
        print("nowcast evaluate: --members must be at least 1", file=sys.stderr)
        return 2
    try:
        document = run_evaluation(args)
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as error:
        print(f"nowcast evaluate: {error}", file=sys.stderr)
        return 2
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
