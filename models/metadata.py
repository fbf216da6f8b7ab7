"""A model folder's `model.yaml`: what the model is, how to rebuild it, and its file checksums.

Torch-free on purpose: the API process reads the metadata (frames, interval, grid rules) to
validate requests and answer `GET /v1/models` without loading torch.

A model folder holds

    model.yaml               this metadata (the `ModelConfig` it rebuilds from, and more)
    vae.safetensors          frame-wise VAE (encoder + decoder)
    denoiser.safetensors     Earthformer-UNet (EMA weights)
    alignment.safetensors    knowledge-alignment network (optional)
    readout.safetensors      intensity readout of the readout guidance (optional)
    encoder.onnx             VAE encoder, frames -> latent mean (written by `nowcast export`)
    decoder.onnx             VAE decoder, latents -> frames
"""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import yaml

from models.config import ModelConfig

METADATA_FILE = "model.yaml"
FORMAT = "prediff-nowcast-model/1"
VAE_FILE = "vae.safetensors"
DENOISER_FILE = "denoiser.safetensors"
ALIGNMENT_FILE = "alignment.safetensors"
READOUT_FILE = "readout.safetensors"
ENCODER_ONNX_FILE = "encoder.onnx"
DECODER_ONNX_FILE = "decoder.onnx"

# the shipped default model; the folder may not exist until the trained weights land
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "weights" / "small-v3"

# the constraint types the pipeline accepts (models.pipeline.IntensityConstraint)
CONSTRAINT_TYPES = ("mean_intensity",)


@dataclass(frozen=True)
class ModelMetadata:
    """The contents of `model.yaml`.

    Attributes
    ----------
    config: the `ModelConfig` the networks rebuild from.
    name, version: model name (e.g. "small") and version string (e.g. "1").
    created: ISO-8601 UTC time the folder was written.
    checksums: file name -> sha256 hex digest of every weight file in the folder.
    library_versions: package -> version at save time (python, torch, onnx, onnxruntime, ...).
    normalisation: the rain-rate normalisation (`models.units`) and latent scaling.
    training: free-form training information (data, steps, losses, ...).
    extra: any other keys found in the file.
    """

    config: ModelConfig
    name: str
    version: str
    created: str
    checksums: dict[str, str] = field(default_factory=dict)
    library_versions: dict[str, str] = field(default_factory=dict)
    normalisation: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def frames_in(self) -> int:
        return self.config.frames_in

    @property
    def frames_out(self) -> int:
        return self.config.frames_out

    @property
    def interval_s(self) -> int:
        return self.config.interval_s

    @property
    def pixel_size_m(self) -> float:
        return self.config.pixel_size_m

    @property
    def grid_factor(self) -> int:
        return self.config.grid_factor

    @property
    def max_grid_px(self) -> int:
        return self.config.max_grid_px

    @property
    def weights_checksum(self) -> str:
        """One sha256 over the weight checksums, for provenance (e.g. NetCDF `source`)."""
        digest = hashlib.sha256()
        for name in sorted(self.checksums):
            digest.update(f"{name}:{self.checksums[name]}\n".encode())
        return digest.hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """The `model.yaml` document (derived facts repeated at top level for readers)."""
        config = self.config
        return {
            "format": FORMAT,
            "name": self.name,
            "version": self.version,
            "created": self.created,
            "frames_in": config.frames_in,
            "frames_out": config.frames_out,
            "interval_s": config.interval_s,
            "pixel_size_m": config.pixel_size_m,
            "grid": {"factor": config.grid_factor, "max_px": config.max_grid_px},
            "constraint_types": list(CONSTRAINT_TYPES),
            "normalisation": dict(self.normalisation) or normalisation_of(config),
            "library_versions": dict(self.library_versions),
            "checksums": dict(sorted(self.checksums.items())),
            "training": dict(self.training),
            "extra": dict(self.extra),
            "config": _plain(config.to_dict()),
        }

    def replace_checksums(self, checksums: dict[str, str]) -> ModelMetadata:
        return ModelMetadata(
            config=self.config,
            name=self.name,
            version=self.version,
            created=self.created,
            checksums=dict(checksums),
            library_versions=self.library_versions,
            normalisation=self.normalisation,
            training=self.training,
            extra=self.extra,
        )


def normalisation_of(config: ModelConfig) -> dict[str, Any]:
    """How rain rates and latents are scaled for this model (see `models.units`)."""
    return {
        "rain_norm": config.rain_norm,
        "rain_max_mm_h": config.rain_max_mm_h,
        "formula": "x = log1p(R) / log1p(rain_max_mm_h), R in mm h-1",
        "latent_scale": config.latent_scale,
        "latent_min": config.latent_min,
        "latent_max": config.latent_max,
        "predict_residual": config.diffusion.predict_residual,
        "intensity_scale_mm_h": config.intensity_scale_mm_h,
    }


def library_versions() -> dict[str, str]:
    """Versions of the libraries a model folder depends on (missing ones are left out)."""
    versions = {"python": platform.python_version()}
    for package in ("torch", "onnx", "onnxruntime", "onnxscript", "safetensors", "numpy"):
        try:
            versions[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def utc_now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def read_model_metadata(model_dir: str | Path) -> ModelMetadata:
    """Read `model_dir/model.yaml`.

    Raises
    ------
    FileNotFoundError: no `model.yaml` in the folder.
    ValueError: the file is not a model description this code understands.
    """
    path = Path(model_dir) / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {METADATA_FILE} in model folder {Path(model_dir)}")
    document = yaml.safe_load(path.read_text())
    if not isinstance(document, dict) or "config" not in document:
        raise ValueError(f"{path} is not a model description (no 'config' mapping)")
    if document.get("format", FORMAT) != FORMAT:
        raise ValueError(
            f"{path}: unsupported format {document.get('format')!r}; expected {FORMAT}"
        )
    config = ModelConfig.from_dict(document["config"])
    return ModelMetadata(
        config=config,
        name=str(document.get("name", config.name)),
        version=str(document.get("version", "0")),
        created=str(document.get("created", "")),
        checksums={str(k): str(v) for k, v in (document.get("checksums") or {}).items()},
        library_versions={
            str(k): str(v) for k, v in (document.get("library_versions") or {}).items()
        },
        normalisation=dict(document.get("normalisation") or normalisation_of(config)),
        training=dict(document.get("training") or {}),
        extra=dict(document.get("extra") or {}),
    )


def write_model_metadata(model_dir: str | Path, metadata: ModelMetadata) -> Path:
    """Write `model_dir/model.yaml` atomically (write a temporary file, then rename)."""
    path = Path(model_dir) / METADATA_FILE
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(_plain(metadata.to_dict()), sort_keys=False))
    tmp.replace(path)
    return path


def verify_checksums(
    model_dir: str | Path,
    metadata: ModelMetadata | None = None,
    files: Iterable[str] | None = None,
) -> None:
    """Raise ValueError naming every listed file that is missing or whose sha256 differs.

    `files` limits the check to those names (each must be listed in `model.yaml`); default:
    every file `model.yaml` lists.
    """
    model_dir = Path(model_dir)
    metadata = metadata or read_model_metadata(model_dir)
    names = sorted(metadata.checksums) if files is None else list(files)
    problems = []
    for name in names:
        path = model_dir / name
        expected = metadata.checksums.get(name)
        if expected is None:
            problems.append(f"{name} has no sha256 in {METADATA_FILE}")
        elif not path.is_file():
            problems.append(f"{name} is missing")
        elif file_sha256(path) != expected:
            problems.append(f"{name} does not match its sha256 in {METADATA_FILE}")
    if problems:
        raise ValueError(f"model folder {model_dir}: " + "; ".join(problems))


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively, so that YAML holds plain sequences."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
