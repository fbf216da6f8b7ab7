"""`nowcast train package`: turn the three training runs into a model folder.

Writes the VAE weights, the EMA weights of the denoiser and of the alignment net, `model.yaml`
(with the LDM run's `latent_scale` and a `training` summary: steps, wall time and validation
figures per stage), then exports and checks `encoder.onnx` / `decoder.onnx`. With
`--checkpoints` it also writes each run's checkpoint without its optimiser states (see
`slim_checkpoint`) and its `log.csv` to `<weights>/checkpoints/<stage>/`, from where a later
session resumes a stage with `cp -r <weights>/checkpoints/<stage> runs/<stage>` and
`nowcast train <stage> ... --resume`.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from models.alignment import AlignmentNet
from models.bundle import save_model_dir
from models.config import ModelConfig
from models.data import VALIDATION_EVENTS
from models.earthformer_unet import EarthformerUNet
from models.export import export_model_dir
from models.training.common import (
    CHECKPOINT_NAME,
    LOG_NAME,
    apply_overrides,
    load_checkpoint,
    save_checkpoint,
)
from models.vae import FrameVAE

OPTIMISER_KEYS = ("optimiser", "opt_vae", "opt_disc")
STAGE_METRICS = {"vae": "val_mae_mm_h", "ldm": "val_loss", "alignment": "val_rel_error"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vae", default="runs/vae", type=Path, help="VAE run folder")
    parser.add_argument("--ldm", default="runs/ldm", type=Path, help="LDM run folder")
    parser.add_argument(
        "--alignment", default="runs/alignment", type=Path, help="alignment run (optional)"
    )
    parser.add_argument("--weights", default="models/weights/small-v3", type=Path)
    parser.add_argument("--name", default=None, help="model name (default: the config's)")
    parser.add_argument("--version", default="1")
    parser.add_argument(
        "--checkpoints",
        nargs="*",
        default=None,
        choices=["vae", "ldm", "alignment"],
        help="stages whose slim resumable checkpoints to include (no names: all)",
    )
    parser.add_argument("--no-export", action="store_true", help="skip the ONNX export")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override an inference setting of the packaged config, e.g. "
        "diffusion.guidance_scale=4 (training-time fields would not match the weights)",
    )


def slim_checkpoint(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint without optimiser states (about a third of the size): resuming from it
    restarts Adam's moment estimates, which the learning-rate warm-up absorbs."""
    return {k: v for k, v in state.items() if k not in OPTIMISER_KEYS}


def _summary(stage: str, state: dict[str, Any]) -> dict[str, Any]:
    args = state.get("args", {})
    return {
        "steps": state["step"],
        "planned_steps": args.get("steps"),
        "wall_s": round(state["elapsed_s"]),
        "batch_size": args.get("batch_size"),
        "crop_px": args.get("crop_px"),
        "seed": args.get("seed"),
        STAGE_METRICS[stage]: state.get(STAGE_METRICS[stage]),
    }


def package(args: argparse.Namespace) -> int:
    states = {"vae": load_checkpoint(args.vae), "ldm": load_checkpoint(args.ldm)}
    has_alignment = (args.alignment / CHECKPOINT_NAME).exists()
    if has_alignment:
        states["alignment"] = load_checkpoint(args.alignment)
    config = apply_overrides(ModelConfig.from_dict(states["ldm"]["config"]), args.set)

    vae = FrameVAE(config.vae)
    vae.load_state_dict(states["vae"]["vae"])
    denoiser = EarthformerUNet(config)
    denoiser.load_state_dict(states["ldm"]["ema"]["shadow"])
    alignment = None
    if has_alignment:
        alignment = AlignmentNet(config)
        alignment.load_state_dict(states["alignment"]["ema"]["shadow"])

    validation = states["vae"].get("args", {}).get("validation", list(VALIDATION_EVENTS))
    training = {
        "validation_events": list(validation),
        "ema": "denoiser and alignment weights are EMA averages",
        **{stage: _summary(stage, state) for stage, state in states.items()},
    }
    save_model_dir(
        args.weights,
        config,
        vae,
        denoiser,
        alignment,
        extra={"name": args.name or config.name, "version": args.version, "training": training},
    )
    if not args.no_export:
        errors = export_model_dir(args.weights, vae=vae)
        print(f"package: ONNX codec exported, relative errors {errors}")
    if args.checkpoints is not None:
        runs = {"vae": args.vae, "ldm": args.ldm}
        if has_alignment:
            runs["alignment"] = args.alignment
        wanted = set(args.checkpoints or runs)
        for stage, run in runs.items():
            if stage not in wanted:
                continue
            target = args.weights / "checkpoints" / stage
            save_checkpoint(target, slim_checkpoint(states[stage]))
            if (run / LOG_NAME).exists():
                shutil.copy2(run / LOG_NAME, target / LOG_NAME)
    print(f"package: wrote {args.weights}")
    return 0
