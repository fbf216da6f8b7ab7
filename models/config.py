"""Frozen model configurations: one dataclass per component, composed into `ModelConfig`.

A model folder stores its `ModelConfig` in `model.yaml`, so a model rebuilds exactly from its
folder (`ModelConfig.from_dict`). Named presets: `paper` (the SEVIR-LR sizes of Gao et al. 2023),
`small` (the CPU-sized shipped default) and `tiny` (for tests).

Tensor conventions shared by every module of `models/`:
- frames: `(B, T, 1, H, W)` float32, normalised rain rate (see `models.units`)
- latents: `(B, T, C, h, w)` float32 with `h = H / 8`, `w = W / 8`
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

VAE_DOWNSAMPLE_FACTOR = 8  # three stride-2 downsamples
# The largest composite side accepted [px]. Larger grids run as tiles of `max_grid_px`
# (models.tiling); what bounds the domain is memory and time, not the networks: a forecast is
# members x frames_out x H x W float32 (20 x 12 x 2048^2 = 4 GB, and the NetCDF writer's products
# about as much again), and the denoiser's work grows with the tile count (~121 tiles of 256 px
# at 2048^2, each step ~121 times a 256 px forecast's).
MAX_DOMAIN_PX = 2048


@dataclass(frozen=True)
class VAEConfig:
    """Frame-wise KL autoencoder (encoder, decoder) and its patch discriminator."""

    in_channels: int = 1
    latent_channels: int = 64
    # one entry per resolution level; len == 4 gives the three downsamples (x8)
    block_channels: tuple[int, ...] = (128, 256, 512, 512)
    encoder_layers_per_block: int = 2
    decoder_layers_per_block: int = 3
    norm_groups: int = 32
    mid_attention: bool = True
    disc_channels: int = 64
    disc_layers: int = 3


@dataclass(frozen=True)
class DenoiserConfig:
    """Earthformer-UNet denoiser over latents (cuboid self-attention, axial pattern)."""

    # spatial patch size of the first projection (1 = one token per latent pixel)
    patch_size: int = 1
    base_units: int = 256
    block_units: tuple[int, ...] = (256, 512)
    depth: tuple[int, ...] = (4, 4)
    num_heads: int = 4
    ffn_ratio: int = 4
    norm_groups: int = 32
    # temporal kernel of the residual blocks' convolutions (3 = the reference's 3x3x3 convs;
    # 1 = per-frame 3x3 convs, a third of the cost)
    conv_kernel_t: int = 3
    dropout: float = 0.0


@dataclass(frozen=True)
class AlignmentConfig:
    """Knowledge-alignment network A(z_t, t, z_context) -> per-frame mean rain rate."""

    base_units: int = 128
    depth: tuple[int, ...] = (1, 1)
    num_heads: int = 4
    # context frames concatenated along time, as in the denoiser (the reference ignores them)
    use_context: bool = True
    patch_size: int = 1
    ffn_ratio: int = 4
    norm_groups: int = 32
    conv_kernel_t: int = 3


@dataclass(frozen=True)
class ReadoutConfig:
    """Intensity readout R(z) (models.intensity_readout): the rain rate a latent decodes to."""

    hidden_channels: int = 32


# the values of DiffusionConfig.guidance (models.guidance)
GUIDANCE_KINDS = ("alignment", "readout")


@dataclass(frozen=True)
class DiffusionConfig:
    """Noise schedule and sampler defaults."""

    num_train_steps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 2e-2
    beta_schedule: str = "scaled_linear"
    sampler: str = "ddim"
    sampling_steps: int = 50
    eta: float = 0.0
    # how a requested intensity steers sampling (models.guidance): "alignment", PreDiff's
    # alignment net on the noisy latents; "readout", a Newton step of every step's clean
    # estimate through the intensity readout (needs `readout.safetensors`)
    guidance: str = "alignment"
    # lambda of the guidance: for "alignment" the fraction of the gap between the alignment
    # net's predicted mean and the target closed per unit of trajectory; for "readout" the
    # fraction of the clean estimate's gap closed at every step (at most 1)
    guidance_scale: float = 1.0
    ema_decay: float = 0.999
    # Diffuse the change of the future latents from the last past latent (latent persistence)
    # instead of the latents themselves: the denoiser then only has to model what moves,
    # grows or decays, and fine detail of the last frame is carried over exactly.
    predict_residual: bool = False
    # Motion-aware PreDiff: the denoiser also sees the latents of the Lucas-Kanade extrapolation
    # nowcast (`models.extrapolation`) of every lead, and the residual is taken from them instead
    # of the last past latent (implies `predict_residual`). Advection comes from the
    # extrapolation; the diffusion model learns growth, decay and their uncertainty.
    extrapolation: bool = False
    # per-lead std of the scaled residual latents in training; the residual is divided by it so
    # that the diffused quantity has unit variance at every lead (None = 1 everywhere)
    residual_scale: tuple[float, ...] | None = None
    # per-lead factor on the sampled residual before it is added back to its origin (with the
    # alignment guidance a steered forecast keeps its full residual; the readout guidance
    # steers the shrunk one): < 1 pulls the members toward the extrapolation, most where it is
    # still good, at the first leads: on small-v3 it raised CSI@1 at every lead and lowered CRPS
    # (None = 1)
    residual_shrink: tuple[float, ...] | None = None


# the values of ModelConfig.probability_matching (models.probability_matching)
PROBABILITY_MATCHING = (None, "cdf", "cdf_keep_mean")


@dataclass(frozen=True)
class ModelConfig:
    name: str = "paper"
    frames_in: int = 7
    frames_out: int = 6
    interval_s: int = 300
    pixel_size_m: float = 1000.0
    # the largest accepted grid side, in pixels (position embeddings are sized for it)
    max_grid_px: int = 384
    # rain-rate normalisation (models.units): x = log1p(R) / log1p(rain_max_mm_h)
    rain_norm: str = "log1p"
    rain_max_mm_h: float = 128.0
    # STEPS-style precipitation mask (models.precip_mask): rain is kept within this rim [px]
    # around the rain the extrapolation nowcast carries to each lead; None = no mask
    precip_mask_rim_px: int | None = None
    # every member at every lead gets the extrapolation nowcast's intensity distribution
    # (models.probability_matching): "cdf" its values (STEPS' probmatching_method="cdf"; a
    # steered forecast keeps its mean), "cdf_keep_mean" its shape at the member's own mean;
    # None = the model's own distribution
    probability_matching: str | None = None
    # per-lead weight of the extrapolation nowcast blended into every member after decoding
    # (models.extrapolation_blend), for forecasts without an intensity constraint; None = none
    extrapolation_blend: tuple[float, ...] | None = None
    # alignment target scale: A predicts mean rain rate [mm h-1] / intensity_scale_mm_h
    intensity_scale_mm_h: float = 10.0
    # latents are multiplied by this before diffusion (set from data when the LDM is trained)
    latent_scale: float = 1.0
    # per-channel range (0.1-99.9 % quantiles) of the scaled training latents; when set, the
    # sampler clamps its
    # predicted clean latents to it at every step (a denoiser that overshoots the range makes
    # the decoder paint too intense rain). Set from data with latent_scale; None = no clamp.
    latent_min: tuple[float, ...] | None = None
    latent_max: tuple[float, ...] | None = None
    vae: VAEConfig = field(default_factory=VAEConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    alignment: AlignmentConfig = field(default_factory=AlignmentConfig)
    readout: ReadoutConfig = field(default_factory=ReadoutConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)

    def __post_init__(self) -> None:
        if self.diffusion.guidance not in GUIDANCE_KINDS:
            raise ValueError(
                f"diffusion.guidance must be one of {GUIDANCE_KINDS}, "
                f"got {self.diffusion.guidance!r}"
            )
        if self.probability_matching not in PROBABILITY_MATCHING:
            raise ValueError(
                f"probability_matching must be one of {PROBABILITY_MATCHING}, "
                f"got {self.probability_matching!r}"
            )
        for name, values in (
            ("extrapolation_blend", self.extrapolation_blend),
            ("diffusion.residual_shrink", self.diffusion.residual_shrink),
        ):
            if values is not None and (
                len(values) != self.frames_out or not all(0 <= v <= 1 for v in values)
            ):
                raise ValueError(
                    f"{name} must hold {self.frames_out} values in [0, 1] (one per lead), "
                    f"got {values!r}"
                )
        diffusion = self.diffusion
        if diffusion.residual_shrink is not None and not (
            diffusion.predict_residual or diffusion.extrapolation
        ):
            raise ValueError(
                "diffusion.residual_shrink needs a residual model "
                "(diffusion.predict_residual or diffusion.extrapolation)"
            )

    @property
    def grid_factor(self) -> int:
        """Grid sides must be multiples of this (VAE x8, patch embedding, UNet merges)."""
        merges = 2 ** (len(self.denoiser.block_units) - 1)
        return VAE_DOWNSAMPLE_FACTOR * self.denoiser.patch_size * merges

    @property
    def max_latent_px(self) -> int:
        return self.max_grid_px // VAE_DOWNSAMPLE_FACTOR

    @property
    def max_domain_px(self) -> int:
        """The largest accepted grid side [px]; grids above `max_grid_px` run as tiles."""
        return max(MAX_DOMAIN_PX, self.max_grid_px)

    def padded_shape(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) rounded up to multiples of `grid_factor`: the grid the networks run on."""
        factor = self.grid_factor
        return -(-height // factor) * factor, -(-width // factor) * factor

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(C, h, w) of one frame's latent for a grid of `height` x `width` pixels."""
        return (
            self.vae.latent_channels,
            height // VAE_DOWNSAMPLE_FACTOR,
            width // VAE_DOWNSAMPLE_FACTOR,
        )

    def check_grid(self, height: int, width: int) -> None:
        """Raise ValueError with a fix-it message unless the grid is accepted.

        Any side from 1 to `max_domain_px` px is accepted: the pipeline pads to `grid_factor`
        (padding is missing coverage) and runs grids above `max_grid_px` as tiles.
        """
        for label, side in (("height", height), ("width", width)):
            if int(side) != side or side <= 0:
                raise ValueError(f"grid {label} {side} px is not a positive whole number")
            if side > self.max_domain_px:
                raise ValueError(
                    f"grid {label} {side} px exceeds the largest accepted side of "
                    f"{self.max_domain_px} px; crop the grid or split it into parts"
                )

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        data = dict(data)
        parts = {
            "vae": VAEConfig,
            "denoiser": DenoiserConfig,
            "alignment": AlignmentConfig,
            "readout": ReadoutConfig,
            "diffusion": DiffusionConfig,
        }
        for key, part in parts.items():
            if key in data:
                data[key] = _from_dict(part, data[key])
        return _from_dict(cls, data)


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    kwargs = {
        key: tuple(value) if isinstance(value, list) else value for key, value in data.items()
    }
    return cls(**kwargs)


PAPER = ModelConfig()

SMALL = ModelConfig(
    name="small",
    frames_in=7,
    frames_out=12,
    # the position tables are trained on 256 px crops only; larger grids would run on
    # untrained entries (large composites are the job of tiling, not of larger tables)
    max_grid_px=256,
    # STEPS' default rim; measured on small-v3 (model card): CSI@1 +0.002, CRPS -0.002, and a
    # dry input stays exactly dry (without it: isolated cells up to 11 mm/h)
    precip_mask_rim_px=10,
    # measured on small-v3 (model card "Inference settings (v3.2)"), with eta 1: CRPS 0.509 ->
    # 0.496, CSI@1 0.525 -> 0.526, FSS 0.765 -> 0.764
    probability_matching="cdf_keep_mean",
    # measured on small-v3 (model card "Inference settings (v3.4)") with residual_shrink: CSI@1
    # at +5 min 0.830 -> 0.842, CRPS 0.4842 -> 0.4840
    extrapolation_blend=(0.4, 0.3, 0.2, 0.1) + (0.0,) * 8,
    # sized for CPU: decoding 240 frames of 256 x 256 takes ~3 s of CPU time on one thread
    # (measured); 2 resnets per decoder level would take ~5 s
    vae=VAEConfig(
        latent_channels=4,
        block_channels=(8, 8, 16, 32),
        encoder_layers_per_block=1,
        decoder_layers_per_block=1,
        norm_groups=4,
        disc_channels=16,
        disc_layers=3,
    ),
    # 4x4 patches give 8x8 tokens per frame of a 256 px grid (2x2 patches cost 3x as much).
    # A token then carries 4x4x4 = 64 latent values: 48 channels could not carry them (the
    # first CPU run's denoiser could not even return its input noise at t ~ T), 96 can.
    # One forward over 20 members x (7 + 12) frames takes ~1.3 s on this 2-core CPU.
    denoiser=DenoiserConfig(
        patch_size=4,
        base_units=96,
        block_units=(96, 192),
        depth=(1, 1),
        num_heads=4,
        norm_groups=8,
    ),
    alignment=AlignmentConfig(
        base_units=32,
        depth=(1, 1),
        num_heads=4,
        patch_size=4,
        norm_groups=8,
    ),
    # motion-aware residual: the denoiser models the change from the extrapolation nowcast.
    # eta 1 (stochastic DDIM steps): CRPS 0.525 -> 0.509 on small-v3 (model card).
    # The residual shrink, 0.5 at +5 min rising to 1 at +60 min: CSI@1 0.530 -> 0.545, CRPS
    # 0.4936 -> 0.4842 at 20 steps; with it 10 steps score as 20 (CRPS 0.4840 and 0.4841 with
    # the blend above; small-v3's model card "Inference settings (v3.4)")
    diffusion=DiffusionConfig(
        sampling_steps=10,
        eta=1.0,
        predict_residual=True,
        extrapolation=True,
        residual_shrink=tuple(0.5 + 0.5 * lead / 11 for lead in range(12)),
    ),
)

TINY = ModelConfig(
    name="tiny",
    frames_in=7,
    frames_out=6,
    max_grid_px=256,
    vae=VAEConfig(
        latent_channels=4,
        block_channels=(8, 8, 16, 16),
        encoder_layers_per_block=1,
        decoder_layers_per_block=1,
        norm_groups=4,
        disc_channels=8,
        disc_layers=2,
    ),
    denoiser=DenoiserConfig(
        patch_size=1,
        base_units=16,
        block_units=(16, 32),
        depth=(1, 1),
        num_heads=2,
        norm_groups=4,
    ),
    alignment=AlignmentConfig(base_units=16, depth=(1, 1), num_heads=2, norm_groups=4),
    diffusion=DiffusionConfig(sampling_steps=5),
)

PRESETS: dict[str, ModelConfig] = {"paper": PAPER, "small": SMALL, "tiny": TINY}


def get_config(name: str) -> ModelConfig:
    """The named preset; an unknown name raises ValueError listing the valid ones."""
    try:
        return PRESETS[name]
    except KeyError:
        valid = sorted(PRESETS)
        raise ValueError(f"unknown model config {name!r}; choose one of {valid}") from None
