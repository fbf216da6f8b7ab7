"""`nowcast export --weights DIR`: write the VAE codec as ONNX and check it against PyTorch.

Writes `encoder.onnx` (input `frames` `(N, 1, H, W)` normalised rain rate -> output
`latent_mean` `(N, C, H/8, W/8)`) and `decoder.onnx` (`latents` -> `frames`) into the model
folder, with N, H and W dynamic (H, W multiples of 8), using torch's `torch.export`-based ONNX
exporter. Each file is then run with onnxruntime on random inputs at batch 1 and 3 and compared
with the torch module; the sha256 of both files go into `model.yaml`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from models.config import VAE_DOWNSAMPLE_FACTOR, ModelConfig
from models.metadata import (
    DECODER_ONNX_FILE,
    ENCODER_ONNX_FILE,
    file_sha256,
    read_model_metadata,
    write_model_metadata,
)
from models.onnx_codec import (
    DECODER_INPUT,
    DECODER_OUTPUT,
    ENCODER_INPUT,
    ENCODER_OUTPUT,
    OnnxCodecSession,
    VAEDecoder,
    VAEEncoderMean,
)

DEFAULT_OPSET = 18
# ONNX vs torch: max |onnx - torch| <= RELATIVE_TOLERANCE * max |torch|
RELATIVE_TOLERANCE = 1e-4
CHECK_BATCH_SIZES = (1, 3)
_MAX_BATCH = 1 << 16


def _export(
    module: nn.Module,
    example: torch.Tensor,
    path: Path,
    input_name: str,
    output_name: str,
    spatial_multiple: int,
    max_side: int,
    opset: int,
) -> None:
    """Export `module` with dynamic batch and spatial axes to `path`."""
    batch = torch.export.Dim("N", min=1, max=_MAX_BATCH)
    # sides are spatial_multiple * k; stating it lets torch.export prove the shape arithmetic
    rows = torch.export.Dim("rows", min=1, max=max(max_side // spatial_multiple, 2))
    cols = torch.export.Dim("cols", min=1, max=max(max_side // spatial_multiple, 2))
    if spatial_multiple > 1:
        height, width = spatial_multiple * rows, spatial_multiple * cols
    else:
        height, width = rows, cols
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter (deprecations, missing torchvision)
        torch.onnx.export(
            module.eval(),
            (example,),
            str(path),
            input_names=[input_name],
            output_names=[output_name],
            dynamic_shapes={input_name: {0: batch, 2: height, 3: width}},
            opset_version=opset,
            dynamo=True,
            external_data=False,  # one self-contained file per network
            verbose=False,
        )
    _name_output_axes(path, ("N", None, "out_height", "out_width"))


def _name_output_axes(path: Path, names: tuple[str | None, ...]) -> None:
    """Give the output's symbolic axes readable names (the exporter calls them s39, s94)."""
    model = onnx.load(str(path))
    dims = model.graph.output[0].type.tensor_type.shape.dim
    for dim, name in zip(dims, names, strict=False):
        if name is not None and dim.HasField("dim_param"):
            dim.dim_param = name
    onnx.save(model, str(path))


def export_codec(
    vae: nn.Module, config: ModelConfig, model_dir: str | Path, opset: int = DEFAULT_OPSET
) -> tuple[Path, Path]:
    """Write `encoder.onnx` and `decoder.onnx` of `vae` into `model_dir`; returns both paths."""
    model_dir = Path(model_dir)
    vae = vae.to("cpu").eval()
    factor = VAE_DOWNSAMPLE_FACTOR
    side = config.grid_factor * 2  # any valid grid works as the tracing example
    encoder_path = model_dir / ENCODER_ONNX_FILE
    decoder_path = model_dir / DECODER_ONNX_FILE
    frames = torch.zeros(2, 1, side, side)
    latents = torch.zeros(2, config.vae.latent_channels, side // factor, side // factor)
    _export(
        VAEEncoderMean(vae),
        frames,
        encoder_path,
        ENCODER_INPUT,
        ENCODER_OUTPUT,
        factor,
        config.max_grid_px,
        opset,
    )
    _export(
        VAEDecoder(vae),
        latents,
        decoder_path,
        DECODER_INPUT,
        DECODER_OUTPUT,
        1,
        config.max_latent_px,
        opset,
    )
    return encoder_path, decoder_path


def relative_error(result: np.ndarray, reference: np.ndarray) -> float:
    """max |result - reference| / max |reference| (the ONNX acceptance measure)."""
    scale = float(np.abs(reference).max())
    return float(np.abs(result - reference).max()) / max(scale, 1e-12)


@torch.no_grad()
def check_codec(
    vae: nn.Module,
    config: ModelConfig,
    model_dir: str | Path,
    batch_sizes: tuple[int, ...] = CHECK_BATCH_SIZES,
    grid_px: tuple[int, int] | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Compare the ONNX files with the torch codec on seeded random inputs (CPU provider).

    Returns
    -------
    {"encoder_batch1": rel_err, "decoder_batch1": rel_err, ...} with rel_err as in
    `relative_error`.
    """
    model_dir = Path(model_dir)
    vae = vae.to("cpu").eval()
    height, width = grid_px or (config.grid_factor * 2, config.grid_factor * 3)
    generator = torch.Generator().manual_seed(seed)
    encoder = OnnxCodecSession(model_dir / ENCODER_ONNX_FILE, providers=["CPUExecutionProvider"])
    decoder = OnnxCodecSession(model_dir / DECODER_ONNX_FILE, providers=["CPUExecutionProvider"])
    torch_encoder, torch_decoder = VAEEncoderMean(vae), VAEDecoder(vae)
    errors = {}
    for batch in batch_sizes:
        # normalised rain lies in [0, 1]; sparse rain like real frames
        frames = torch.rand(batch, 1, height, width, generator=generator)
        frames = frames * (torch.rand(frames.shape, generator=generator) < 0.3)
        reference = torch_encoder(frames).numpy()
        errors[f"encoder_batch{batch}"] = relative_error(
            encoder.run_numpy(frames.numpy()), reference
        )
        latents = torch.from_numpy(reference)
        errors[f"decoder_batch{batch}"] = relative_error(
            decoder.run_numpy(latents.numpy()), torch_decoder(latents).numpy()
        )
    return errors


def update_checksums(model_dir: str | Path) -> None:
    """Record the sha256 of the ONNX files (those present) in `model.yaml`."""
    model_dir = Path(model_dir)
    metadata = read_model_metadata(model_dir)
    checksums = dict(metadata.checksums)
    for name in (ENCODER_ONNX_FILE, DECODER_ONNX_FILE):
        if (model_dir / name).is_file():
            checksums[name] = file_sha256(model_dir / name)
    write_model_metadata(model_dir, metadata.replace_checksums(checksums))


def export_model_dir(
    model_dir: str | Path,
    vae: nn.Module | None = None,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
) -> dict[str, float]:
    """Export, check and record the codec of a model folder.

    Parameters
    ----------
    model_dir: a folder with `model.yaml` and `vae.safetensors`.
    vae: the VAE already in memory (default: load it from the folder).
    check: compare with PyTorch at batch 1 and 3; ValueError if any relative error exceeds
        `RELATIVE_TOLERANCE`.

    Returns
    -------
    The relative errors of the check (empty without `check`).
    """
    model_dir = Path(model_dir)
    if vae is None:
        from models.bundle import load_model_dir

        bundle = load_model_dir(model_dir, "cpu")
        vae, config = bundle.vae, bundle.config
    else:
        config = read_model_metadata(model_dir).config
    export_codec(vae, config, model_dir, opset)
    errors = check_codec(vae, config, model_dir) if check else {}
    bad = {name: err for name, err in errors.items() if not err <= RELATIVE_TOLERANCE}
    if bad:
        raise ValueError(f"ONNX export of {model_dir} differs from PyTorch: {bad}")
    update_checksums(model_dir)
    return errors


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="nowcast export",
        description="Export the VAE encoder and decoder of a model folder to ONNX and check "
        "them against PyTorch.",
    )
    parser.add_argument("--weights", required=True, type=Path, help="model folder (model.yaml)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (>= 17)")
    parser.add_argument("--no-check", action="store_true", help="skip the PyTorch comparison")
    args = parser.parse_args(argv)
    if args.opset < 17:
        parser.error("--opset must be >= 17")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        errors = export_model_dir(args.weights, opset=args.opset, check=not args.no_check)
    except (FileNotFoundError, ValueError) as error:
        print(f"nowcast export: {error}", file=sys.stderr)
        return 1
    report = {
        "encoder": str(args.weights / ENCODER_ONNX_FILE),
        "decoder": str(args.weights / DECODER_ONNX_FILE),
        "opset": args.opset,
        "relative_errors": errors,
        "tolerance": RELATIVE_TOLERANCE,
    }
    print(json.dumps(report, indent=2))
    return 0
