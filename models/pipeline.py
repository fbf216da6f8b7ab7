"""The inference pipeline: past radar frames [mm h-1] -> an ensemble of future frames [mm h-1].

    past (T_in, H, W) mm/h --normalise--> frames --encoder--> context latents
    noise (members, T_out, C, h, w) --denoiser + sampler (+ guidance) x steps--> latents
    latents --decoder--> frames --denormalise--> forecast (members, T_out, H, W) mm/h

A residual model (`DiffusionConfig.predict_residual`) samples the change from the last context
latent, which is added back before decoding. A motion-aware model (`DiffusionConfig.extrapolation`)
first extrapolates the last frame along the Lucas-Kanade motion of the past frames
(`models.extrapolation`), encodes that nowcast, conditions the denoiser on it and samples the
per-lead scaled change from it (`models.residual`). After decoding, the members of such a model
may be given a share of the extrapolation at the first leads (`models.extrapolation_blend`),
masked to near the extrapolated rain (`models.precip_mask`) and given its intensity distribution
(`models.probability_matching`); `diffusion.residual_shrink` scales the sampled change per lead.
Forecasts with an intensity constraint skip the blend, which would undo the steering, and with
the alignment guidance the shrink too (the readout guidance steers the shrunk residual).

Any grid up to `ModelConfig.max_domain_px` is taken: it is padded to the grid factor (missing
coverage), and one larger than the trained `max_grid_px` runs as overlapping tiles of it, the
denoiser's noise prediction blended at every step and the VAE blended per tile
(`models.tiling`), with the noise and the motion on the whole domain.

The pipeline is the loop only: the math of a step is in `models.schedulers`, the intensity
steering in `models.guidance` (through the alignment net or the intensity readout, as
`diffusion.guidance` says), the networks in their own modules. The encoder and decoder are
torch modules or ONNX Runtime sessions (`models.onnx_codec`), interchangeable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from models.config import VAE_DOWNSAMPLE_FACTOR, ModelConfig
from models.extrapolation import extrapolate
from models.extrapolation_blend import blend_with_extrapolation
from models.guidance import IntensityGuidance, ReadoutGuidance
from models.metadata import (
    DECODER_ONNX_FILE,
    ENCODER_ONNX_FILE,
    ModelMetadata,
    verify_checksums,
)
from models.onnx_codec import OnnxCodecSession, VAEDecoder, VAEEncoderMean
from models.precip_mask import rain_mask
from models.probability_matching import match_to_extrapolation
from models.residual import ResidualMap
from models.schedulers import Bounds, NoiseSchedule, make_sampler, randn_rows
from models.tiling import TileLayout, merge_tiles, split_tiles, tile_layout, tile_weight
from models.units import denormalise_rain, normalise_rain

StepCallback = Callable[[int, int], None]
Codec = nn.Module | OnnxCodecSession | Callable[[torch.Tensor], torch.Tensor]

# frames per encoder / decoder call at most (see DEFAULT_CODEC_CHUNK_PX for what bounds memory)
DEFAULT_CODEC_CHUNK = 32
# full-resolution pixels (frames x H x W, or tiles x tile pixels) per encoder / decoder call: the
# codec's activations grow with them, whatever the grid or ensemble. Measured with small-v3's
# ONNX decoder on CPU: ~220 B of peak RSS per pixel of a call (470 MB for 32 frames of 256 x 256,
# 140 MB for 8), at the same ms per frame; 8 frames of 256 x 256 per call.
DEFAULT_CODEC_CHUNK_PX = 8 * 256 * 256
# Overlap of neighbouring tiles on grids above the trained size (models.tiling), as a fraction
# of the trained tile: 8 latent px (64 px of radar) for 256 px tiles, a few times the decoder's
# receptive field at the latent level, so the raised-cosine ramp hides every border; 1/4 keeps
# the tile count at ~1.8x that of non-overlapping tiles.
TILE_OVERLAP_FRACTION = 0.25
# denoiser rows (tiles x members) per call on tiled grids: bounds the activations' memory
DEFAULT_TILE_ROWS = 256


@dataclass(frozen=True)
class IntensityConstraint:
    """Steer the forecast toward a mean rain rate over the forecast frames.

    Parameters
    ----------
    target_mm_h: requested mean rain rate of the future frames [mm h-1], >= 0.
    strength: multiplies the model's guidance scale lambda (`config.diffusion.guidance_scale`);
        0 switches the guidance off.
    """

    target_mm_h: float
    strength: float = 1.0
    type: ClassVar[str] = "mean_intensity"

    def __post_init__(self) -> None:
        if not math.isfinite(self.target_mm_h) or self.target_mm_h < 0:
            raise ValueError(f"target_mm_h must be finite and >= 0, got {self.target_mm_h}")
        if not math.isfinite(self.strength) or self.strength < 0:
            raise ValueError(f"strength must be finite and >= 0, got {self.strength}")


@dataclass
class ForecastRequest:
    """One forecast job.

    Parameters
    ----------
    past_mm_h (`(T, H, W)` float32): rain rate [mm h-1], oldest first, NaN = no coverage; the
        last `config.frames_in` frames are used.
    members: ensemble size (>= 1).
    steps: sampler steps (None = `config.diffusion.sampling_steps`).
    seed: seed of this request's `torch.Generator` (None = a fresh random seed).
    constraint: optional intensity steering.
    eta: DDIM eta (None = `config.diffusion.eta`); ignored by the DDPM sampler.
    """

    past_mm_h: np.ndarray
    members: int = 1
    steps: int | None = None
    seed: int | None = None
    constraint: IntensityConstraint | None = None
    eta: float | None = None


@dataclass
class _Prepared:
    """A validated request: model-space frames and its missing-coverage mask."""

    request: ForecastRequest
    frames: torch.Tensor  # (T_in, 1, H, W) normalised rain rate, NaN -> 0
    missing: np.ndarray  # (H, W) bool, True where the last input frame is NaN (or padding)
    # (T_out, 1, H, W) normalised extrapolation nowcast (motion-aware models), else None
    extrapolated: torch.Tensor | None
    steps: int
    eta: float
    shape: tuple[int, int]  # (H, W) of the request before padding to the grid factor
    # (T_out, H, W) weight of the forecast in [0, 1] (`models.precip_mask`), or None
    rain_weight: np.ndarray | None = None
    # (T_out, H, W) extrapolation nowcast [mm h-1] that the members are blended with
    # (`models.extrapolation_blend`) and whose intensity distribution they take
    # (`models.probability_matching`), or None when neither is configured
    nowcast: np.ndarray | None = None


class NowcastPipeline:
    """Ensemble nowcasts from a trained PreDiff model.

    Parameters
    ----------
    config: the model's configuration.
    encoder: frames `(N, 1, H, W)` normalised -> latent mean `(N, C, H/8, W/8)`: a torch module
        (e.g. `VAEEncoderMean(vae)`) or an `OnnxCodecSession` of `encoder.onnx`.
    decoder: latents `(N, C, h, w)` -> frames `(N, 1, 8h, 8w)`: torch module or ONNX session.
    denoiser: `EarthformerUNet` (EMA weights).
    alignment: `AlignmentNet`, needed only for constrained forecasts of a model with
        `diffusion.guidance: alignment`.
    readout: `IntensityReadout`, needed only for constrained forecasts of a model with
        `diffusion.guidance: readout`.
    device: where the torch networks run; they are moved there and put in eval mode.
    metadata: the model folder's metadata, if any (for provenance).
    codec_chunk: frames (or tiles) per encoder / decoder call at most.
    codec_chunk_px: full-resolution pixels per encoder / decoder call at most (frames x H x W,
        or tiles x tile pixels on grids above the trained size; at least one frame or tile):
        bounds the codec's working memory at any grid and ensemble size.
    denoiser_precision: "float32", "bfloat16" (the denoiser under autocast; the sampler's
        arithmetic stays float32) or "auto": bfloat16 where the device computes it natively
        (a CPU with AVX512-BF16 or AMX, a CUDA GPU that supports it), float32 elsewhere.
        Measured on the shipped model and this CPU: 1.7x faster denoiser steps, the same
        CSI@1 / CRPS to 3 decimals, members with CSI 0.99 against their float32 twins.
    tile_rows: denoiser rows (tiles x members) per call on grids above the trained size.
    share_network_calls: let requests of one `forecast_batch` share network calls (see there);
        off by default, so that a request's forecast never depends on its batch mates.
    """

    def __init__(
        self,
        config: ModelConfig,
        encoder: Codec,
        decoder: Codec,
        denoiser: nn.Module,
        alignment: nn.Module | None = None,
        device: str | torch.device = "cpu",
        metadata: ModelMetadata | None = None,
        codec_chunk: int = DEFAULT_CODEC_CHUNK,
        denoiser_precision: str = "auto",
        tile_rows: int = DEFAULT_TILE_ROWS,
        share_network_calls: bool = False,
        codec_chunk_px: int = DEFAULT_CODEC_CHUNK_PX,
        readout: nn.Module | None = None,
    ) -> None:
        self.config = config
        self.device = torch.device(device)
        self.denoiser_dtype = resolve_precision(denoiser_precision, self.device)
        self.encoder = _on_device(encoder, self.device)
        self.decoder = _on_device(decoder, self.device)
        self.denoiser = denoiser.to(self.device).eval()
        self.alignment = alignment.to(self.device).eval() if alignment is not None else None
        self.readout = readout.to(self.device).eval() if readout is not None else None
        self.metadata = metadata
        self.codec_chunk = int(codec_chunk)
        self.codec_chunk_px = int(codec_chunk_px)
        self.tile_rows = max(int(tile_rows), 1)
        self.share_network_calls = share_network_calls
        self.schedule = NoiseSchedule(config.diffusion)

    @classmethod
    def from_model_dir(
        cls,
        model_dir: str | Path,
        device: str | torch.device = "cpu",
        encoder_backend: str = "onnx",
        decoder_backend: str | None = None,
        verify: bool = True,
        denoiser_precision: str = "auto",
        codec_threads: int | None = None,
    ) -> NowcastPipeline:
        """Load a model folder (`models.bundle`).

        Parameters
        ----------
        encoder_backend, decoder_backend: "onnx" (the folder's `encoder.onnx` / `decoder.onnx`
            on CUDA if onnxruntime offers it, else CPU) or "torch" (the VAE on `device`).
            The decoder's default is ONNX on a CPU device (2.4x faster than torch for 240
            frames of 256 x 256 here) and torch elsewhere, where the latents already are.
        verify: check the files' sha256 against `model.yaml`.
        denoiser_precision: see the class.
        codec_threads: intra-op threads of the ONNX Runtime sessions (None = onnxruntime's
            default, as many as the machine has cores, whatever else runs there).
        """
        from models.bundle import load_model_dir

        if decoder_backend is None:
            decoder_backend = "onnx" if torch.device(device).type == "cpu" else "torch"
        model_dir = Path(model_dir)
        bundle = load_model_dir(model_dir, device, verify=verify)
        onnx_files = [
            name
            for backend, name in [
                (encoder_backend, ENCODER_ONNX_FILE),
                (decoder_backend, DECODER_ONNX_FILE),
            ]
            if backend == "onnx"
        ]
        if verify and onnx_files:
            verify_checksums(model_dir, bundle.metadata, onnx_files)
        encoder = _codec(
            encoder_backend,
            model_dir / ENCODER_ONNX_FILE,
            VAEEncoderMean,
            bundle.vae,
            codec_threads,
        )
        decoder = _codec(
            decoder_backend, model_dir / DECODER_ONNX_FILE, VAEDecoder, bundle.vae, codec_threads
        )
        return cls(
            bundle.config,
            encoder,
            decoder,
            bundle.denoiser,
            bundle.alignment,
            device=device,
            metadata=bundle.metadata,
            denoiser_precision=denoiser_precision,
            readout=bundle.readout,
        )

    @property
    def encoder_backend(self) -> str:
        """ "onnx:<provider>" or "torch:<device>" (for the worker's start-up log)."""
        return _backend_name(self.encoder, self.device)

    @property
    def denoiser_precision(self) -> str:
        """ "float32" or "bfloat16": the resolved compute dtype of the denoiser."""
        return str(self.denoiser_dtype).removeprefix("torch.")

    @property
    def decoder_backend(self) -> str:
        return _backend_name(self.decoder, self.device)

    def forecast(
        self,
        past_mm_h: np.ndarray,
        members: int = 1,
        steps: int | None = None,
        seed: int | None = None,
        constraint: IntensityConstraint | None = None,
        on_step: StepCallback | None = None,
        eta: float | None = None,
    ) -> np.ndarray:
        """One ensemble forecast.

        Parameters
        ----------
        past_mm_h (`(T, H, W)` float32): rain rate [mm h-1], NaN = no coverage, T >=
            `config.frames_in` (the last frames are used); H, W accepted by `config.check_grid`.
        members, steps, seed, constraint, eta: see `ForecastRequest`.
        on_step: called as `on_step(step, total)` after each sampler step; an exception raised
            there stops the forecast and propagates (cancellation).

        Returns
        -------
        `(members, T_out, H, W)` float32: rain rate [mm h-1] in [0, rain_max_mm_h], NaN where the
        last input frame is NaN.

        Raises
        ------
        ValueError: wrong shape, too few frames, grid not accepted, infinite values, bad
            members / steps, or a constraint for a model without an alignment network.
        """
        request = ForecastRequest(past_mm_h, members, steps, seed, constraint, eta)
        return self.forecast_batch([request], on_step)[0]

    def forecast_batch(
        self, requests: Sequence[ForecastRequest], on_step: StepCallback | None = None
    ) -> list[np.ndarray]:
        """Several forecasts, each bit for bit what it would be alone.

        Every request draws its noise from its own `torch.Generator(seed)` and, unless
        `share_network_calls` is set, runs its own network calls: a kernel's blocking and
        reduction order change with the batch size, so rows of requests that share calls differ
        from their twins alone in the last bits, which guidance and the output rounding can
        amplify to visible differences (up to 0.32 mm/h measured, issue 13). On a CPU the calls
        of one 20-member request already fill the cores, so little is lost. With
        `share_network_calls`, requests with the same grid, steps and eta are sampled as one
        batch (faster where large batches pay, e.g. a GPU), equal alone or batched only up to
        floating-point reordering. `on_step(step, total)` counts the steps of all requests.

        Returns
        -------
        One `(members, T_out, H, W)` float32 array [mm h-1] per request, in request order.
        """
        labels = [f"request {i}: " if len(requests) > 1 else "" for i in range(len(requests))]
        prepared = [
            self._prepare(label, request) for label, request in zip(labels, requests, strict=True)
        ]
        groups: dict[tuple[int, int, int, float, int], list[int]] = {}
        for index, item in enumerate(prepared):
            height, width = item.frames.shape[-2:]
            alone = 0 if self.share_network_calls else index
            groups.setdefault((height, width, item.steps, item.eta, alone), []).append(index)
        total = sum(key[2] for key in groups)
        progress = _Progress(on_step, total)
        results: list[np.ndarray | None] = [None] * len(prepared)
        for indices in groups.values():
            outputs = self._run_group([prepared[i] for i in indices], progress)
            for index, output in zip(indices, outputs, strict=True):
                results[index] = output
        return results  # type: ignore[return-value]

    # -- steps of a forecast ------------------------------------------------------------------

    def _prepare(self, where: str, request: ForecastRequest) -> _Prepared:
        """Validate a request (`where` prefixes error messages) and normalise its frames."""
        config = self.config
        past = np.asarray(request.past_mm_h, dtype=np.float32)
        if past.ndim != 3:
            raise ValueError(f"{where}past_mm_h must be (time, y, x), got shape {past.shape}")
        if past.shape[0] < config.frames_in:
            raise ValueError(
                f"{where}{past.shape[0]} input frames; the model needs at least {config.frames_in}"
            )
        config.check_grid(past.shape[1], past.shape[2])
        past = past[-config.frames_in :]
        if np.isinf(past).any():
            raise ValueError(f"{where}past_mm_h contains infinite values")
        if request.members < 1:
            raise ValueError(f"{where}members must be >= 1, got {request.members}")
        steps = int(request.steps if request.steps is not None else config.diffusion.sampling_steps)
        if not 1 <= steps <= self.schedule.num_train_steps:
            raise ValueError(f"{where}steps must be in [1, {self.schedule.num_train_steps}]")
        eta = float(request.eta if request.eta is not None else config.diffusion.eta)
        if eta < 0:
            raise ValueError(f"{where}eta must be >= 0, got {eta}")
        if request.constraint is not None and self._steering_network is None:
            network = {"alignment": "alignment network", "readout": "intensity readout"}
            raise ValueError(
                f"{where}this model has no {network[config.diffusion.guidance]}; "
                "drop the constraint"
            )
        height, width = past.shape[1:]
        # padding to the grid factor (bottom and right) is missing coverage, never rain
        padded_h, padded_w = config.padded_shape(height, width)
        pad = [(0, 0), (0, padded_h - height), (0, padded_w - width)]
        missing = np.isnan(np.pad(past[-1], pad[1:], constant_values=np.nan))
        # the model sees no rain where there is no coverage; the output masks it again
        frames = normalise_rain(np.nan_to_num(np.pad(past, pad), nan=0.0), config.rain_max_mm_h)
        extrapolated = rain_weight = kept_nowcast = None
        if (
            config.diffusion.extrapolation
            or config.precip_mask_rim_px is not None
            or config.probability_matching is not None
            or config.extrapolation_blend is not None
        ):
            # motion once on the whole (unpadded) domain
            nowcast = np.pad(extrapolate(past, config.frames_out).rain_mm_h, pad)
            if config.diffusion.extrapolation:
                normalised = normalise_rain(nowcast, config.rain_max_mm_h)
                extrapolated = torch.from_numpy(normalised)[:, None]
            if config.precip_mask_rim_px is not None:
                rain_weight = rain_mask(nowcast, rim_px=config.precip_mask_rim_px)
            if config.probability_matching is not None or config.extrapolation_blend is not None:
                kept_nowcast = nowcast
        return _Prepared(
            request,
            torch.from_numpy(frames)[:, None],
            missing,
            extrapolated,
            steps,
            eta,
            (height, width),
            rain_weight,
            kept_nowcast,
        )

    @torch.no_grad()
    def _run_group(self, group: list[_Prepared], progress: _Progress) -> list[np.ndarray]:
        config, device = self.config, self.device
        members = [item.request.members for item in group]
        batch = sum(members)
        height, width = group[0].frames.shape[-2:]
        channels, latent_h, latent_w = config.latent_shape(height, width)

        # encode every request's past (and extrapolation) once, then repeat it for its members
        repeats = torch.tensor(members, device=device)
        context = self._encode(
            [item.frames for item in group], config.frames_in, repeats, latent_h, latent_w
        )
        extrapolation = None
        if config.diffusion.extrapolation:
            extrapolation = self._encode(
                [item.extrapolated for item in group],
                config.frames_out,
                repeats,
                latent_h,
                latent_w,
            )

        # one generator per request, shared by its consecutive member rows
        generators = []
        for item, count in zip(group, members, strict=True):
            generator = torch.Generator(device="cpu")
            if item.request.seed is None:
                generator.seed()
            else:
                generator.manual_seed(int(item.request.seed))
            generators += [generator] * count

        sampler = make_sampler(config.diffusion, self.schedule, group[0].steps, group[0].eta)
        guidance = self._guidance(group, members)
        # what is diffused: the latents, or their (scaled) residual from an origin
        residual = ResidualMap.for_config(config.diffusion, context, extrapolation)
        x0_bounds = self._latent_bounds(residual)
        shape = (batch, config.frames_out, channels, latent_h, latent_w)
        # the noise is drawn for the full latent grid (seeded per request); the denoiser runs on
        # tiles of the trained size, its noise prediction blended back every step (tiling.py)
        sample = randn_rows(shape, generators, device)
        tiles = _LatentTiles.of(
            tile_layout(latent_h, latent_w, config.max_latent_px, self._tile_overlap),
            context,
            extrapolation,
        )
        # the sampler's state -> what is decoded; the readout guidance steers the latter
        decoder_input = self._decoder_input(residual, self._residual_shrink(group, members))
        for t in sampler.timesteps:
            eps = self._predict_noise(sample, t, tiles)
            mean_shift = None
            if isinstance(guidance, ReadoutGuidance):
                clean = sampler.clean_estimate(eps, t, sample, x0_bounds)
                final = t == sampler.timesteps[-1]
                change = guidance.clean_change(clean, decoder_input, x0_bounds, final)
                mean_shift = None if change is None else sampler.clean_weight(t) * change
            elif guidance is not None:
                mean_shift = self._guidance_shift(
                    guidance, sample, t, tiles, residual, sampler.guidance_weight(t)
                )
            sample = sampler.step(eps, t, sample, generators, mean_shift, x0_bounds)
            progress.advance()
        flat = decoder_input(sample).reshape(-1, channels, latent_h, latent_w)
        del sample, residual, tiles, context, extrapolation  # not needed while decoding
        return self._decode(group, members, flat)

    def _decode(
        self, group: list[_Prepared], members: list[int], flat: torch.Tensor
    ) -> list[np.ndarray]:
        """Latents `(sum(members) * T_out, C, h, w)` (rows: member-major, then lead time) ->
        each request's `(members, T_out, H, W)` float32 rain rate [mm h-1] on its own grid
        (padding cropped), NaN = no coverage.

        Each decoder call's frames go straight into the requests' output arrays: besides
        them, only one call's worth of frames (`codec_chunk_px`) exists at a time.
        """
        config = self.config
        frames_out = config.frames_out
        outputs = [
            np.empty((count, frames_out, *item.shape), dtype=np.float32)
            for item, count in zip(group, members, strict=True)
        ]
        # first row of each request in `flat`, and one past its last
        bounds = np.cumsum([0] + [count * frames_out for count in members]).tolist()
        for start, decoded in self._codec_chunks(self.decoder, flat):
            # The model only knows rates inside its normalisation range; the decoder's linear
            # output can overshoot it, and expm1 turns a small overshoot into thousands of mm/h.
            rain = denormalise_rain(decoded.float().clamp_(0.0, 1.0), config.rain_max_mm_h)
            rain = rain[:, 0].cpu().numpy()
            stop = start + rain.shape[0]
            for index, (item, output) in enumerate(zip(group, outputs, strict=True)):
                first, last = max(start, bounds[index]), min(stop, bounds[index + 1])
                if first < last:
                    height, width = item.shape
                    rows = output.reshape(-1, height, width)  # a view: (member, lead) rows
                    part = slice(first - bounds[index], last - bounds[index])
                    rows[part] = rain[first - start : last - start, :height, :width]
        for item, output in zip(group, outputs, strict=True):
            height, width = item.shape
            steered = item.request.constraint is not None
            if config.extrapolation_blend is not None and not steered:
                assert item.nowcast is not None
                blend_with_extrapolation(
                    output,
                    item.nowcast[..., :height, :width],
                    config.extrapolation_blend,
                    config.rain_max_mm_h,
                )
            if item.rain_weight is not None:
                output *= item.rain_weight[..., :height, :width]
            if config.probability_matching is not None:
                assert item.nowcast is not None
                # a requested intensity keeps the mean it was steered to
                keep_mean = config.probability_matching == "cdf_keep_mean"
                match_to_extrapolation(
                    output,
                    item.nowcast[..., :height, :width],
                    covered=~item.missing[:height, :width],
                    keep_mean=keep_mean or steered,
                    threads=torch.get_num_threads(),
                )
            output[:, :, item.missing[:height, :width]] = np.nan
        return outputs

    def _predict_noise(self, sample: torch.Tensor, t: int, tiles: _LatentTiles) -> torch.Tensor:
        """The denoiser's eps `(B, T_out, C, h, w)` at step `t`: on a grid above the trained
        size, over all tiles (in calls of at most `tile_rows` rows), blended by `tiles.weight`."""
        rows = split_tiles(sample, tiles.layout)
        chunk = self.tile_rows if tiles.layout.count > 1 else rows.shape[0]
        parts = []
        for start in range(0, rows.shape[0], chunk):
            part = slice(start, start + chunk)
            timestep = torch.full((rows[part].shape[0],), t, dtype=torch.long, device=sample.device)
            extrapolation = None if tiles.extrapolation is None else tiles.extrapolation[part]
            with torch.autocast(
                sample.device.type,
                self.denoiser_dtype,
                enabled=self.denoiser_dtype != torch.float32,
            ):
                eps = self.denoiser(
                    rows[part], timestep, tiles.context[part], extrapolation=extrapolation
                )
            parts.append(eps.float())
        return merge_tiles(torch.cat(parts), tiles.layout, tiles.weight)

    def _guidance_shift(
        self,
        guidance: IntensityGuidance,
        sample: torch.Tensor,
        t: int,
        tiles: _LatentTiles,
        residual: ResidualMap,
        weight: float,
    ) -> torch.Tensor | None:
        """The guidance mean shift of the sampler's state at step `t`.

        On a tiled grid every tile is steered toward the request's target with its own
        alignment prediction, and the shifts are blended like the noise: the target is a mean
        rate, so each tile's mean being near it puts the domain's mean near it too.
        """
        if tiles.extrapolation is not None:
            # a motion-aware alignment net reads what the denoiser reads
            reads = sample
        else:
            # older nets read noisy absolute latents, x_t + sqrt(alpha_prod_t) origin (the same
            # shift for both)
            reads = sample + math.sqrt(self.schedule.alpha_prod(t)) * residual.origin
        layout = tiles.layout
        if layout.count > 1:
            guidance = IntensityGuidance(
                guidance.alignment_net,
                guidance.target_norm.repeat(layout.count),
                guidance.scale.repeat(layout.count),
            )
        shift = guidance.mean_shift(
            split_tiles(reads, layout), t, tiles.context, weight, tiles.extrapolation
        )
        return None if shift is None else merge_tiles(shift, layout, tiles.weight)

    def _residual_shrink(self, group: list[_Prepared], members: list[int]) -> torch.Tensor | None:
        """`(B, T_out, 1, 1, 1)` factors on the sampled residual (`diffusion.residual_shrink`):
        the model's factor of each lead, except for steered requests of a model with alignment
        guidance, which get 1 (their residual carries the steering; the readout guidance
        steers the shrunk residual itself); None when the model has none."""
        factors = self.config.diffusion.residual_shrink
        if factors is None:
            return None
        keep_full = self.config.diffusion.guidance == "alignment"
        ones = [1.0] * len(factors)
        rows = [
            ones if keep_full and item.request.constraint is not None else list(factors)
            for item, count in zip(group, members, strict=True)
            for _ in range(count)
        ]
        return torch.tensor(rows, device=self.device).reshape(len(rows), len(factors), 1, 1, 1)

    def _decoder_input(
        self, residual: ResidualMap, shrink: torch.Tensor | None
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """The sampler's state `(B, T_out, C, h, w)` -> the decoder's input latents (the
        residual shrunk by `shrink`, `(B, T_out, 1, 1, 1)` or None)."""
        scale = self.config.latent_scale
        if shrink is None:
            return lambda diffused: residual.to_latents(diffused) / scale
        return lambda diffused: residual.to_latents(diffused * shrink) / scale

    @property
    def _steering_network(self) -> nn.Module | None:
        """The network `diffusion.guidance` steers with, if the model has it."""
        return self.readout if self.config.diffusion.guidance == "readout" else self.alignment

    def _guidance(
        self, group: list[_Prepared], members: list[int]
    ) -> IntensityGuidance | ReadoutGuidance | None:
        """Guidance with a per-row target and lambda (0 for requests without a constraint)."""
        network = self._steering_network
        if network is None or all(item.request.constraint is None for item in group):
            return None
        targets, scales = [], []
        for item, count in zip(group, members, strict=True):
            constraint = item.request.constraint
            if constraint is None:
                targets += [0.0] * count
                scales += [0.0] * count
            else:
                targets += [constraint.target_mm_h / self.config.intensity_scale_mm_h] * count
                scales += [constraint.strength * self.config.diffusion.guidance_scale] * count
        guidance: IntensityGuidance | ReadoutGuidance
        if self.config.diffusion.guidance == "readout":
            weight = self._block_weight(group, members)
            guidance = ReadoutGuidance(network, torch.tensor(targets), torch.tensor(scales), weight)
        else:
            guidance = IntensityGuidance(network, torch.tensor(targets), torch.tensor(scales))
        return guidance if guidance.active else None

    def _block_weight(self, group: list[_Prepared], members: list[int]) -> torch.Tensor:
        """`(B, T_out, h, w)`: the share of each latent block that a request's forecast mean
        counts: the rain mask kept after decoding, times the covered pixels, over the covered
        fraction (the mean of the output is taken where there is coverage)."""
        frames_out, factor = self.config.frames_out, VAE_DOWNSAMPLE_FACTOR
        rows = []
        for item, count in zip(group, members, strict=True):
            covered = torch.from_numpy(~item.missing).float()
            weight = covered.expand(frames_out, -1, -1)
            if item.rain_weight is not None:
                weight = weight * torch.from_numpy(np.asarray(item.rain_weight, np.float32))
            block = torch.nn.functional.avg_pool2d(weight[:, None], factor)[:, 0]
            block = block / covered.mean().clamp_min(1e-6)
            rows.append(block.expand(count, -1, -1, -1))
        return torch.cat(rows).to(self.device)

    def _encode(
        self,
        frames: list[torch.Tensor],
        frames_per_item: int,
        repeats: torch.Tensor,
        latent_h: int,
        latent_w: int,
    ) -> torch.Tensor:
        """Normalised frames `(T, 1, H, W)` of each request -> scaled latents
        `(sum(repeats), T, C, h, w)`, each request's rows repeated for its members."""
        flat = torch.cat(frames).to(self.device)
        latents = self._map_codec(self.encoder, flat) * self.config.latent_scale
        channels = latents.shape[1]
        latents = latents.reshape(len(frames), frames_per_item, channels, latent_h, latent_w)
        return latents.repeat_interleave(repeats, dim=0)

    def _latent_bounds(self, residual: ResidualMap) -> Bounds | None:
        """The sampler's clamp of its predicted clean sample: the model's latent range in the
        diffused units (`ResidualMap.bounds`); None when the model has no range."""
        config = self.config
        if config.latent_min is None or config.latent_max is None:
            return None
        shape = (1, 1, len(config.latent_min), 1, 1)
        low = torch.tensor(config.latent_min, device=self.device).reshape(shape)
        high = torch.tensor(config.latent_max, device=self.device).reshape(shape)
        return residual.bounds(low, high)

    @property
    def _tile_overlap(self) -> int:
        """Overlap of neighbouring latent tiles [latent px]."""
        return max(1, int(self.config.max_latent_px * TILE_OVERLAP_FRACTION))

    def _map_codec(self, codec: Codec, flat: torch.Tensor) -> torch.Tensor:
        """Encoder `(N, 1, H, W)` -> `(N, C, h, w)` or decoder `(N, C, h, w)` -> `(N, 1, H, W)`,
        all frames at once (see `_codec_chunks`)."""
        return torch.cat([coded for _, coded in self._codec_chunks(codec, flat)])

    def _calls_of(self, pixels: int) -> int:
        """Frames (or tiles) of `pixels` full-resolution px each per codec call."""
        return max(1, min(self.codec_chunk, self.codec_chunk_px // max(pixels, 1)))

    def _codec_chunks(self, codec: Codec, flat: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        """Encoder `(N, 1, H, W)` -> `(n, C, h, w)` or decoder `(N, C, h, w)` -> `(n, 1, H, W)`
        parts, yielded as (first frame, part) in order: calls of at most `codec_chunk_px`
        full-resolution pixels, so the codec's memory is bounded whatever N and the grid; grids
        above the trained size as overlapping tiles of it, blended in the output's space (the
        VAE's attention and norms saw 256 px crops)."""
        latent_tile = self.config.max_latent_px
        is_decoder = codec is self.decoder
        tile_in = latent_tile if is_decoder else latent_tile * VAE_DOWNSAMPLE_FACTOR
        height, width = flat.shape[-2:]
        # full-resolution pixels of one frame: what the codec's activations scale with
        scale = VAE_DOWNSAMPLE_FACTOR if is_decoder else 1
        frame_px = height * width * scale * scale
        if height <= tile_in and width <= tile_in:
            frames = self._calls_of(frame_px)
            for start in range(0, flat.shape[0], frames):
                yield start, codec(flat[start : start + frames])
            return
        latent_grid = (height, width) if is_decoder else (height // 8, width // 8)
        latent = tile_layout(*latent_grid, latent_tile, self._tile_overlap)
        pixel = latent.scaled(VAE_DOWNSAMPLE_FACTOR)
        layout_in, layout_out = (latent, pixel) if is_decoder else (pixel, latent)
        weight = tile_weight(layout_out, flat.device)
        # frames per round: their tiles' outputs are held until blended, so bounded too
        frames = self._calls_of(frame_px)
        tiles_per_call = self._calls_of((latent_tile * VAE_DOWNSAMPLE_FACTOR) ** 2)
        for start in range(0, flat.shape[0], frames):
            rows = split_tiles(flat[start : start + frames], layout_in)
            coded = torch.cat([codec(part) for part in torch.split(rows, tiles_per_call)])
            yield start, merge_tiles(coded.float(), layout_out, weight)


@dataclass(frozen=True)
class _LatentTiles:
    """The tile layout of a latent grid, its blending weight and the conditioning latents
    split into tiles once (they do not change between sampler steps)."""

    layout: TileLayout
    weight: torch.Tensor
    context: torch.Tensor
    extrapolation: torch.Tensor | None

    @classmethod
    def of(
        cls, layout: TileLayout, context: torch.Tensor, extrapolation: torch.Tensor | None
    ) -> _LatentTiles:
        return cls(
            layout,
            tile_weight(layout, context.device),
            split_tiles(context, layout),
            None if extrapolation is None else split_tiles(extrapolation, layout),
        )


class _Progress:
    """Counts steps across the batches of one call and reports them to the callback."""

    def __init__(self, callback: StepCallback | None, total: int) -> None:
        self.callback = callback
        self.total = total
        self.done = 0

    def advance(self) -> None:
        self.done += 1
        if self.callback is not None:
            self.callback(self.done, self.total)


PRECISIONS = ("auto", "float32", "bfloat16")


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The denoiser's compute dtype for `precision` ("auto", "float32", "bfloat16") on `device`."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            native = torch.cuda.is_bf16_supported()
        else:
            # without these instructions CPU bfloat16 is emulated and slower than float32
            native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        precision = "bfloat16" if native else "float32"
    return torch.bfloat16 if precision == "bfloat16" else torch.float32


def _on_device(codec: Codec, device: torch.device) -> Codec:
    if isinstance(codec, nn.Module):
        return codec.to(device).eval()
    return codec


def _codec(
    backend: str,
    onnx_path: Path,
    torch_wrapper: type[nn.Module],
    vae: nn.Module,
    threads: int | None = None,
) -> Codec:
    if backend == "onnx":
        return OnnxCodecSession(onnx_path, intra_op_threads=threads)
    if backend == "torch":
        return torch_wrapper(vae)
    raise ValueError(f"unknown codec backend {backend!r}; choose 'onnx' or 'torch'")


def _backend_name(codec: Codec, device: torch.device) -> str:
    if isinstance(codec, OnnxCodecSession):
        return f"onnx:{codec.provider}"
    return f"torch:{device}"
