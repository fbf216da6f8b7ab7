"""`nowcast train vae | ldm | alignment | package | readout`: the three training stages, the
packaging, and the intensity readout of a packaged model.

    nowcast train vae --config small --out runs/vae
    nowcast train ldm --config small --vae runs/vae --out runs/ldm
    nowcast train alignment --config small --vae runs/vae --ldm runs/ldm --out runs/alignment
    nowcast train package --vae runs/vae --ldm runs/ldm --alignment runs/alignment \
        --weights models/weights/small-v3
    nowcast train readout --weights models/weights/small-v3

Every stage checkpoints to `<out>/checkpoint.pt` (model, optimiser, EMA, step, RNG states) and
logs to `<out>/log.csv`; `--resume` continues from the checkpoint with the same arguments.
"""

from __future__ import annotations

import argparse
import importlib

from models.data import DEFAULT_DATA_DIR, VALIDATION_EVENTS

STAGES = {
    "vae": "models.training.vae",
    "ldm": "models.training.ldm",
    "alignment": "models.training.alignment",
}


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="small", help="model preset (paper, small, tiny)")
    parser.add_argument("--data", default=str(DEFAULT_DATA_DIR), help="folder of radar *.nc")
    parser.add_argument("--out", default=None, help="run folder (default runs/<stage>)")
    parser.add_argument("--steps", type=int, default=None, help="total optimiser steps")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--crop-px", type=int, default=None, help="training crop side [px]")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=2, help="CPU threads (1 is faster on a loaded machine)"
    )
    parser.add_argument(
        "--max-minutes", type=float, default=None, help="stop (and checkpoint) after this wall time"
    )
    parser.add_argument(
        "--until-step",
        type=int,
        default=None,
        help="stop (and checkpoint) at this step; the schedule still spans --steps",
    )
    parser.add_argument("--checkpoint-every-s", type=float, default=300.0)
    parser.add_argument("--log-every", type=int, default=10, help="CSV row every N steps")
    parser.add_argument(
        "--validation",
        nargs="+",
        default=list(VALIDATION_EVENTS),
        help="held-out event names (default: %(default)s)",
    )


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, just that stage's module is imported (they import torch)."""
    parser = argparse.ArgumentParser(prog="nowcast train", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="stage", required=True)
    for stage, module_name in STAGES.items():
        stage_parser = sub.add_parser(stage, help=f"train the {stage} stage")
        if only in (None, stage):
            _add_common(stage_parser)
            importlib.import_module(module_name).add_arguments(stage_parser)
    package = sub.add_parser("package", help="write the model folder from the three runs")
    if only in (None, "package"):
        importlib.import_module("models.training.package").add_arguments(package)
    readout = sub.add_parser("readout", help="fit a model folder's intensity readout")
    if only in (None, "readout"):
        importlib.import_module("models.training.readout").add_arguments(readout)
    return parser


def main(argv: list[str]) -> int:
    only = argv[0] if argv and argv[0] in (*STAGES, "package", "readout") else None
    args = build_parser(only).parse_args(argv)
    if args.stage == "package":
        return importlib.import_module("models.training.package").package(args)
    if args.stage == "readout":
        return importlib.import_module("models.training.readout").train(args)
    return importlib.import_module(STAGES[args.stage]).train(args)
