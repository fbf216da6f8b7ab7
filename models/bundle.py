"""Model folders: save the networks with their `model.yaml`, load them back.

`save_model_dir` writes the weights as safetensors plus the metadata of `models.metadata` (with
the sha256 of each weight file); `load_model_dir` rebuilds the networks from the stored
`ModelConfig` and loads the weights (checking the checksums first). `create_random_model_dir`
makes a complete folder with seeded random weights (and the ONNX codec) for tests and for running
the service before trained weights exist.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from models.config import ModelConfig, get_config
from models.metadata import (
    ALIGNMENT_FILE,
    DENOISER_FILE,
    READOUT_FILE,
    VAE_FILE,
    ModelMetadata,
    file_sha256,
    library_versions,
    normalisation_of,
    read_model_metadata,
    utc_now_iso,
    verify_checksums,
    write_model_metadata,
)

# keys of `extra` that become top-level metadata fields; the rest go to `metadata.extra`
_KNOWN_EXTRA = ("name", "version", "training")


@dataclass
class ModelBundle:
    """The networks of one model folder, in eval mode on one device."""

    config: ModelConfig
    metadata: ModelMetadata
    vae: nn.Module
    denoiser: nn.Module
    alignment: nn.Module | None
    model_dir: Path
    readout: nn.Module | None = None


def build_networks(config: ModelConfig) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
    """Fresh (randomly initialised, global RNG) VAE, denoiser, alignment net and intensity
    readout for `config`."""
    from models.alignment import AlignmentNet
    from models.earthformer_unet import EarthformerUNet
    from models.intensity_readout import IntensityReadout
    from models.vae import FrameVAE

    return (
        FrameVAE(config.vae),
        EarthformerUNet(config),
        AlignmentNet(config),
        IntensityReadout(config),
    )


def save_model_dir(
    model_dir: str | Path,
    config: ModelConfig,
    vae: nn.Module,
    denoiser: nn.Module,
    alignment: nn.Module | None,
    extra: dict[str, Any] | None = None,
    readout: nn.Module | None = None,
) -> ModelMetadata:
    """Write a model folder: `model.yaml` + `vae`, `denoiser`, `alignment`, `readout`
    `.safetensors`.

    Parameters
    ----------
    model_dir: created if missing; existing weight files are overwritten.
    config: the `ModelConfig` the networks were built from (stored, so they rebuild exactly).
    vae, denoiser, alignment: the networks (pass the EMA denoiser); `alignment` may be None.
    readout: the intensity readout (`models.intensity_readout`), or None.
    extra: `name`, `version` (default config name and "1") and `training` (free-form dict) go
        to their metadata fields; any other key is kept under `extra`.

    Returns
    -------
    The metadata written. ONNX files already in the folder keep their checksums only if
    unchanged; run `nowcast export` after changing the VAE.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    extra = dict(extra or {})
    networks = {VAE_FILE: vae, DENOISER_FILE: denoiser}
    for file_name, optional in ((ALIGNMENT_FILE, alignment), (READOUT_FILE, readout)):
        if optional is not None:
            networks[file_name] = optional
        elif (model_dir / file_name).exists():
            (model_dir / file_name).unlink()
    checksums = {}
    for file_name, network in networks.items():
        # save_model (not save_file) drops duplicate names of shared tensors
        save_model(network, str(model_dir / file_name))
        (model_dir / file_name).chmod(0o644)  # safetensors writes 0600; services read as others
        checksums[file_name] = file_sha256(model_dir / file_name)
    metadata = ModelMetadata(
        config=config,
        name=str(extra.get("name", config.name)),
        version=str(extra.get("version", "1")),
        created=utc_now_iso(),
        checksums=checksums,
        library_versions=library_versions(),
        normalisation=normalisation_of(config),
        training=dict(extra.get("training") or {}),
        extra={k: v for k, v in extra.items() if k not in _KNOWN_EXTRA},
    )
    write_model_metadata(model_dir, metadata)
    return metadata


def attach_readout(
    model_dir: str | Path,
    readout: nn.Module,
    config: ModelConfig,
    summary: dict[str, Any],
    version: str | None = None,
) -> ModelMetadata:
    """Add (or replace) the intensity readout of a model folder: `readout.safetensors`, and in
    `model.yaml` the config given (its readout and guidance settings), the readout's checksum and
    `training.readout = summary`. The other files and their checksums stay as they are."""
    model_dir = Path(model_dir)
    metadata = read_model_metadata(model_dir)
    save_model(readout, str(model_dir / READOUT_FILE))
    (model_dir / READOUT_FILE).chmod(0o644)
    metadata = dataclasses.replace(
        metadata,
        config=config,
        version=metadata.version if version is None else str(version),
        created=utc_now_iso(),
        checksums={**metadata.checksums, READOUT_FILE: file_sha256(model_dir / READOUT_FILE)},
        training={**metadata.training, "readout": summary},
    )
    write_model_metadata(model_dir, metadata)
    return metadata


def load_model_dir(
    model_dir: str | Path, device: str | torch.device = "cpu", verify: bool = True
) -> ModelBundle:
    """Rebuild the networks of a model folder and load their weights, in eval mode.

    Parameters
    ----------
    model_dir: a folder written by `save_model_dir`.
    device: where the networks go.
    verify: check the weight files' sha256 against `model.yaml` first (ValueError on
        mismatch); the ONNX files are checked by whoever loads them.
    """
    from models.alignment import AlignmentNet
    from models.earthformer_unet import EarthformerUNet
    from models.intensity_readout import IntensityReadout
    from models.vae import FrameVAE

    model_dir = Path(model_dir)
    metadata = read_model_metadata(model_dir)
    optional = [name for name in (ALIGNMENT_FILE, READOUT_FILE) if (model_dir / name).is_file()]
    if verify:
        # only the files loaded here: stale ONNX files must not stop `nowcast export`
        verify_checksums(model_dir, metadata, [VAE_FILE, DENOISER_FILE, *optional])
    config = metadata.config
    vae = FrameVAE(config.vae)
    denoiser = EarthformerUNet(config)
    load_model(vae, str(model_dir / VAE_FILE), device="cpu")
    load_model(denoiser, str(model_dir / DENOISER_FILE), device="cpu")
    alignment = readout = None
    if ALIGNMENT_FILE in optional:
        alignment = AlignmentNet(config)
        load_model(alignment, str(model_dir / ALIGNMENT_FILE), device="cpu")
    if READOUT_FILE in optional:
        readout = IntensityReadout(config)
        load_model(readout, str(model_dir / READOUT_FILE), device="cpu")
    for network in (vae, denoiser, alignment, readout):
        if network is not None:
            network.to(device).eval().requires_grad_(False)
    return ModelBundle(config, metadata, vae, denoiser, alignment, model_dir, readout)


def create_random_model_dir(
    model_dir: str | Path,
    config_name: str = "tiny",
    seed: int = 0,
    export_onnx: bool = True,
    config: ModelConfig | None = None,
) -> Path:
    """A complete model folder with seeded random weights (tests, service before training).

    Parameters
    ----------
    model_dir: created if missing.
    config_name: preset of `models.config` (ignored when `config` is given).
    seed: the same seed gives the same weights.
    export_onnx: also write `encoder.onnx` and `decoder.onnx` (and their checksums).

    Returns
    -------
    `model_dir` as a Path.
    """
    config = config or get_config(config_name)
    # module constructors draw from the global RNG; fork_rng restores its state afterwards, so
    # seeding it here changes nothing outside this block
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae, denoiser, alignment, readout = build_networks(config)
    generator = torch.Generator().manual_seed(seed + 1)
    for network in (vae, denoiser, alignment, readout):
        _perturb_zero_weights(network, generator)
    save_model_dir(
        model_dir,
        config,
        vae.eval(),
        denoiser.eval(),
        alignment.eval(),
        extra={
            "name": f"{config.name}-random",
            "version": "0",
            "training": {"note": f"untrained: seeded random initialisation (seed {seed})"},
        },
        readout=readout.eval(),
    )
    if export_onnx:
        from models.export import export_model_dir

        export_model_dir(model_dir, vae=vae)
    return Path(model_dir)


@torch.no_grad()
def _perturb_zero_weights(
    network: nn.Module, generator: torch.Generator, std: float = 0.02
) -> None:
    """Give zero-initialised weight matrices (diffusion "zero-init" output layers) small noise.

    Trained networks never keep them at zero; a random model whose output layer is zero would
    ignore its input, which makes it useless for tests of sampling and guidance.
    """
    for name, parameter in network.named_parameters():
        if parameter.ndim >= 2 and name.endswith("weight") and not parameter.any():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.copy_(noise * std)
