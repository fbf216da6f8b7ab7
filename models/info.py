"""`nowcast model-info --config paper|small|tiny | --weights DIR`: sizes and shapes as JSON.

Parameter counts per component (`vae_encoder`, `vae_decoder`, `discriminator`, `denoiser`,
`alignment`, `readout`), the latent shape for a grid, frames in/out and the grid rules. The
networks are built on PyTorch's "meta" device: no memory is allocated and nothing is
initialised, so even the `paper` config answers at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.config import PRESETS, VAE_DOWNSAMPLE_FACTOR, ModelConfig, get_config
from models.metadata import read_model_metadata


def count_parameters(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def parameter_counts(config: ModelConfig) -> dict[str, int]:
    """Parameters per component of `config`, built on the meta device (no memory)."""
    from models.alignment import AlignmentNet
    from models.discriminator import PatchDiscriminator
    from models.earthformer_unet import EarthformerUNet
    from models.intensity_readout import IntensityReadout
    from models.vae import FrameVAE

    with torch.device("meta"):
        vae = FrameVAE(config.vae)
        counts = {
            "vae_encoder": count_parameters(vae.encoder),
            "vae_decoder": count_parameters(vae.decoder),
            "discriminator": count_parameters(PatchDiscriminator(config.vae)),
            "denoiser": count_parameters(EarthformerUNet(config)),
            "alignment": count_parameters(AlignmentNet(config)),
            "readout": count_parameters(IntensityReadout(config)),
        }
    # what a forecast uses (the discriminator is for training only; the guidance steers with
    # one of alignment net and readout)
    counts["inference_total"] = (
        counts["vae_encoder"]
        + counts["vae_decoder"]
        + counts["denoiser"]
        + counts[config.diffusion.guidance]
    )
    return counts


def model_info(config: ModelConfig, grid_px: tuple[int, int] | None = None) -> dict[str, Any]:
    """The model-info document for `config`; the latent shape is for `grid_px` (default: max)."""
    height, width = grid_px or (config.max_grid_px, config.max_grid_px)
    config.check_grid(height, width)
    return {
        "config": config.name,
        "parameters": parameter_counts(config),
        "grid_px": [height, width],
        "latent_shape": list(config.latent_shape(height, width)),
        "latent_downsample": VAE_DOWNSAMPLE_FACTOR,
        "frames_in": config.frames_in,
        "frames_out": config.frames_out,
        "interval_s": config.interval_s,
        "pixel_size_m": config.pixel_size_m,
        "grid_factor": config.grid_factor,
        "max_grid_px": config.max_grid_px,
        "sampler": config.diffusion.sampler,
        "sampling_steps": config.diffusion.sampling_steps,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="nowcast model-info",
        description="Print parameter counts, latent shape, frames and grid rules as JSON.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", choices=sorted(PRESETS), help="a named preset")
    source.add_argument("--weights", type=Path, help="a model folder (reads its model.yaml)")
    parser.add_argument(
        "--grid",
        type=int,
        nargs=2,
        metavar=("HEIGHT", "WIDTH"),
        help="grid [px] for the latent shape (default: the model's maximum)",
    )
    args = parser.parse_args(argv)
    try:
        if args.weights is not None:
            metadata = read_model_metadata(args.weights)
            info = model_info(metadata.config, tuple(args.grid) if args.grid else None)
            info.update(
                name=metadata.name,
                version=metadata.version,
                weights=str(args.weights),
                weights_checksum=metadata.weights_checksum,
            )
        else:
            info = model_info(get_config(args.config), tuple(args.grid) if args.grid else None)
    except (FileNotFoundError, ValueError) as error:
        print(f"nowcast model-info: {error}", file=sys.stderr)
        return 1
    print(json.dumps(info, indent=2))
    return 0
