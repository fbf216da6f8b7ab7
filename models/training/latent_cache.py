"""Encode training crops to latents once, then cut LDM / alignment batches from the cache.

Encoding is the expensive part of a diffusion step on a 2-core CPU, so both later stages train
on a cache: fixed crop sequences of each event (rain-weighted, fully covered, each with a random
flip/rotation, see `models.data.sample_crop_sequences`) encoded frame by frame to the posterior
mode. Next to each latent sequence the cache keeps the mean rain rate of every 8x8 pixel block
(one value per latent pixel), so the alignment target of any latent sub-crop is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.config import VAE_DOWNSAMPLE_FACTOR, ModelConfig
from models.data import RadarEvent, num_windows, sample_crop_sequences
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
    """

    latents: list[torch.Tensor]
    rain_blocks_mm_h: list[torch.Tensor]
    events: list[str]

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
            },
            path,
        )

    @classmethod
    def load(cls, path: Path) -> LatentCache:
        data = torch.load(path, map_location="cpu", weights_only=True)
        return cls(data["latents"], data["rain_blocks_mm_h"], data["events"])


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
    device = next(vae.parameters()).device
    latents, blocks, names = [], [], []
    for event in events:
        for sequence in sample_crop_sequences(event, crop_px, crops_per_event, rng, window):
            rain = sequence.rain_mm_h
            frames = torch.from_numpy(normalise_rain(rain, config.rain_max_mm_h))
            with evaluating(vae):
                z = encode_frames(vae, frames[None, :, None].to(device), ENCODE_CHUNK_FRAMES)
            latents.append(z[0].cpu())
            f = VAE_DOWNSAMPLE_FACTOR
            t, h, w = rain.shape
            block_mean = rain.reshape(t, h // f, f, w // f, f).mean(axis=(2, 4))
            blocks.append(torch.from_numpy(np.ascontiguousarray(block_mean, dtype=np.float32)))
            names.append(event.name)
    return LatentCache(latents, blocks, names)


@dataclass
class WindowBatch:
    """One training batch cut from the cache.

    latents (`(B, T_in + T_out, C, l, l)` float32): unscaled latents of the window's sub-crop.
    future_mean_mm_h (`(B, T_out)` float32): mean rain rate [mm h-1] of each future frame of
        the sub-crop.
    """

    latents: torch.Tensor
    future_mean_mm_h: torch.Tensor


class WindowSampler:
    """Windows of the cache, each event equally likely, uniform over that event's windows;
    random latent sub-crops.

    Balancing by event keeps the long 10-min BoM day (126 windows per crop) from outweighing
    the 5-min events the model is for.
    """

    def __init__(self, cache: LatentCache, frames_in: int, frames_out: int) -> None:
        self.cache = cache
        self.frames_in = frames_in
        self.window = frames_in + frames_out
        counts = np.array([num_windows(len(z), self.window) for z in cache.latents], dtype=float)
        if counts.sum() == 0:
            raise ValueError(f"the latent cache has no window of {self.window} frames")
        per_event: dict[str, float] = {}
        for name, count in zip(cache.events, counts, strict=True):
            per_event[name] = per_event.get(name, 0.0) + count
        weights = np.array(
            [c / per_event[n] if c else 0.0 for n, c in zip(cache.events, counts, strict=True)]
        )
        self.weights = weights / weights.sum()
        self.counts = counts.astype(int)

    def batch(self, batch_size: int, latent_px: int, rng: np.random.Generator) -> WindowBatch:
        """`batch_size` windows, each cut to a random `latent_px` x `latent_px` sub-crop."""
        latents, means = [], []
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
        return WindowBatch(torch.stack(latents), torch.stack(means))
