"""Encode training crops to latents once, then cut LDM / alignment batches from the cache.

Encoding is the expensive part of a diffusion step on a 2-core CPU, so both later stages train
on a cache: fixed crop sequences of each event (rain-weighted, fully covered, each with a random
flip/rotation, see `models.data.sample_crop_sequences`) encoded frame by frame to the posterior
mode. Next to each latent sequence the cache keeps the mean rain rate of every 8x8 pixel block
(one value per latent pixel), so the alignment target of any latent sub-crop is exact.

The motion-aware model trains on a window cache (`build_window_cache`): random windows of
7 + 12 frames, each cut to a larger crop than the training crop (random latent sub-crops of it
vary the position) with a random flip/rotation, and next to each the encoded Lucas-Kanade
extrapolation nowcast of its 12 leads, computed on the window crop as at inference. Motion
estimation and encoding happen here once, never in the training loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.config import VAE_DOWNSAMPLE_FACTOR, ModelConfig
from models.data import RadarEvent, num_windows, sample_crop_sequences, sample_windows
from models.extrapolation import extrapolate
from models.training.common import evaluating
from models.units import normalise_rain
from models.vae import FrameVAE, encode_frames

ENCODE_CHUNK_FRAMES = 16


@dataclass
class LatentCache:
    """Encoded crop sequences.

    latents: per sequence `(T_i, C, h, w)` float32, the VAE posterior mode (unscaled).
    rain_blocks_mm_h: per sequence `(T_i, h, w)` float32, mean rain rate [mm h-1] of the
        8x8 pixel block under each latent pixel.
    events: per sequence, the event name.
    extrapolations: per sequence (a window of T_in + T_out frames) `(T_out, C, h, w)` float32,
        the posterior mode of the extrapolation nowcast from its first T_in frames; None for
        caches without them.
    groups: per sequence, its sampling group (None = the event names).
    """

    latents: list[torch.Tensor]
    rain_blocks_mm_h: list[torch.Tensor]
    events: list[str]
    extrapolations: list[torch.Tensor] | None = None
    groups: list[str] | None = None

    def latent_std(self) -> float:
        """Standard deviation of all cached latent values (sets `latent_scale = 1 / std`)."""
        flat = torch.cat([z.flatten() for z in self.latents])
        return float(flat.std())

    def channel_range(self, tail: float = 0.0) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel (low, high) quantiles `tail` and `1 - tail` of the cached latent values
        (unscaled); tail 0 gives the min and max."""
        flat = torch.cat([z.transpose(0, 1).flatten(1) for z in self.latents], dim=1).numpy()
        low, high = np.quantile(flat, [tail, 1.0 - tail], axis=1)
        return tuple(low.tolist()), tuple(high.tolist())

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "latents": self.latents,
                "rain_blocks_mm_h": self.rain_blocks_mm_h,
                "events": self.events,
                "extrapolations": self.extrapolations,
                "groups": self.groups,
            },
            path,
        )

    @classmethod
    def load(cls, path: Path) -> LatentCache:
        data = torch.load(path, map_location="cpu", weights_only=True)
        return cls(
            data["latents"],
            data["rain_blocks_mm_h"],
            data["events"],
            data.get("extrapolations"),
            data.get("groups"),
        )


def build_latent_cache(
    vae: FrameVAE,
    events: list[RadarEvent],
    config: ModelConfig,
    crop_px: int,
    crops_per_event: int,
    rng: np.random.Generator,
) -> LatentCache:
    """Encode `crops_per_event` crop sequences of `crop_px` px of each event.

    Events without a full window (e.g. the 2-min MRMS file) are skipped; an event with few
    distinct crops gives fewer (`sample_crop_sequences`). Encoding costs ~0.2 s per 256 x 256
    frame on one loaded CPU core, so the count is a compute budget.
    """
    window = config.frames_in + config.frames_out
    latents, blocks, names = [], [], []
    for event in events:
        for sequence in sample_crop_sequences(event, crop_px, crops_per_event, rng, window):
            latents.append(_encode(vae, sequence.rain_mm_h, config))
            blocks.append(_block_means(sequence.rain_mm_h))
            names.append(event.name)
    return LatentCache(latents, blocks, names)


def build_window_cache(
    vae: FrameVAE,
    events: list[RadarEvent],
    config: ModelConfig,
    crop_px: int,
    windows_per_group: int,
    rng: np.random.Generator,
) -> LatentCache:
    """Encode `windows_per_group` random windows (`models.data.sample_windows`) of each event
    group, spread evenly over the group's events, with their extrapolation nowcasts.

    Costs ~3.5 s per 320 px window on this CPU (measured: 0.95 s Lucas-Kanade + advection, 2.8 s
    encoding 31 frames on one thread; 304 windows took 18 min).
    """
    window = config.frames_in + config.frames_out
    by_group: dict[str, list[RadarEvent]] = {}
    for event in events:
        if num_windows(len(event.sequence_indices()), window):
            by_group.setdefault(event.group, []).append(event)
    latents, blocks, names, groups, extrapolations = [], [], [], [], []
    for group, members in by_group.items():
        counts = np.bincount(
            rng.integers(len(members), size=windows_per_group), minlength=len(members)
        )
        for event, count in zip(members, counts, strict=True):
            for sequence in sample_windows(event, crop_px, int(count), rng, window):
                rain = sequence.rain_mm_h
                nowcast = extrapolate(rain[: config.frames_in], config.frames_out).rain_mm_h
                latents.append(_encode(vae, rain, config))
                extrapolations.append(_encode(vae, nowcast, config))
                blocks.append(_block_means(rain))
                names.append(event.name)
                groups.append(group)
    return LatentCache(latents, blocks, names, extrapolations, groups)


def _encode(vae: FrameVAE, rain_mm_h: np.ndarray, config: ModelConfig) -> torch.Tensor:
    """`(T, H, W)` [mm h-1] -> posterior mode `(T, C, H/8, W/8)` (unscaled) on the CPU."""
    frames = torch.from_numpy(normalise_rain(rain_mm_h, config.rain_max_mm_h))
    device = next(vae.parameters()).device
    with evaluating(vae):
        z = encode_frames(vae, frames[None, :, None].to(device), ENCODE_CHUNK_FRAMES)
    return z[0].cpu()


def _block_means(rain_mm_h: np.ndarray) -> torch.Tensor:
    """Mean rain rate [mm h-1] of every 8x8 block: `(T, H, W)` -> `(T, H/8, W/8)`."""
    f = VAE_DOWNSAMPLE_FACTOR
    t, h, w = rain_mm_h.shape
    block_mean = rain_mm_h.reshape(t, h // f, f, w // f, f).mean(axis=(2, 4))
    return torch.from_numpy(np.ascontiguousarray(block_mean, dtype=np.float32))


@dataclass
class WindowBatch:
    """One training batch cut from the cache.

    latents (`(B, T_in + T_out, C, l, l)` float32): unscaled latents of the window's sub-crop.
    future_mean_mm_h (`(B, T_out)` float32): mean rain rate [mm h-1] of each future frame of
        the sub-crop.
    extrapolation (`(B, T_out, C, l, l)` float32 or None): unscaled latents of the window's
        extrapolation nowcast, the same sub-crop (caches with extrapolations only).
    """

    latents: torch.Tensor
    future_mean_mm_h: torch.Tensor
    extrapolation: torch.Tensor | None = None


class WindowSampler:
    """Windows of the cache, each event group equally likely, uniform over that group's
    windows; random latent sub-crops.

    Balancing by group keeps the long 10-min BoM day (126 windows per crop) from outweighing
    the 5-min events the model is for, and the 18 KNMI 2021 evenings count as one group.
    """

    def __init__(self, cache: LatentCache, frames_in: int, frames_out: int) -> None:
        self.cache = cache
        self.frames_in = frames_in
        self.window = frames_in + frames_out
        counts = np.array([num_windows(len(z), self.window) for z in cache.latents], dtype=float)
        if counts.sum() == 0:
            raise ValueError(f"the latent cache has no window of {self.window} frames")
        groups = cache.groups or cache.events
        per_group: dict[str, float] = {}
        for name, count in zip(groups, counts, strict=True):
            per_group[name] = per_group.get(name, 0.0) + count
        weights = np.array(
            [c / per_group[n] if c else 0.0 for n, c in zip(groups, counts, strict=True)]
        )
        self.weights = weights / weights.sum()
        self.counts = counts.astype(int)

    def batch(self, batch_size: int, latent_px: int, rng: np.random.Generator) -> WindowBatch:
        """`batch_size` windows, each cut to a random `latent_px` x `latent_px` sub-crop."""
        latents, means, extrapolations = [], [], []
        for index in rng.choice(len(self.weights), size=batch_size, p=self.weights):
            start = int(rng.integers(self.counts[index]))
            z = self.cache.latents[index]
            h, w = z.shape[-2:]
            if latent_px > min(h, w):
                raise ValueError(f"latent crop {latent_px} exceeds the cached {h}x{w}")
            row = int(rng.integers(h - latent_px + 1))
            col = int(rng.integers(w - latent_px + 1))
            rows, cols = slice(row, row + latent_px), slice(col, col + latent_px)
            latents.append(z[start : start + self.window, :, rows, cols])
            rain = self.cache.rain_blocks_mm_h[index][start : start + self.window, rows, cols]
            means.append(rain[self.frames_in :].mean(dim=(1, 2)))
            if self.cache.extrapolations is not None:
                if start:
                    raise ValueError("a cache with extrapolations holds single windows")
                extrapolations.append(self.cache.extrapolations[index][:, :, rows, cols])
        extrapolation = torch.stack(extrapolations) if extrapolations else None
        return WindowBatch(torch.stack(latents), torch.stack(means), extrapolation)
