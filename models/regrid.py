"""Radar grids finer than the model's pixel by an integer factor: block means down, bilinear up.

A 500 m composite is averaged over 2 x 2 blocks to the model's 1 km (rain rate is an intensive
quantity: the mean over a block is the 1 km rate); the forecast is brought back to the 500 m
grid by bilinear interpolation between the 1 km cell centres (`torch.nn.functional.interpolate`,
`align_corners=False`, which puts a block's centre where the block's fine cells are centred). The
forecast then has no 1 km steps, and its detail is that of the model, not invented. Both are
NaN-aware: a block is missing only when all of its cells are, and missing blocks do not bleed
into their neighbours when upsampling.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def block_mean(rain_mm_h: np.ndarray, factor: tuple[int, int]) -> np.ndarray:
    """`(..., H, W)` rain rate [mm h-1], NaN = no coverage -> `(..., ceil(H/fy), ceil(W/fx))`
    float32 means over `factor = (fy, fx)` blocks of the covered cells (NaN where none is); the
    last row and column of blocks may be partial."""
    fy, fx = factor
    rain = np.asarray(rain_mm_h, dtype=np.float32)
    if (fy, fx) == (1, 1):
        return rain
    height, width = rain.shape[-2:]
    rows, cols = -(-height // fy), -(-width // fx)
    pad = [(0, 0)] * (rain.ndim - 2) + [(0, rows * fy - height), (0, cols * fx - width)]
    padded = np.pad(rain, pad, constant_values=np.nan)
    blocks = padded.reshape(*rain.shape[:-2], rows, fy, cols, fx)
    valid = (~np.isnan(blocks)).sum(axis=(-3, -1))
    total = np.nansum(blocks, axis=(-3, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid > 0, total / np.maximum(valid, 1), np.nan).astype(np.float32)


def upsample(field: np.ndarray, factor: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """`(..., h, w)` coarse field (NaN = missing) -> `(..., H, W)` float32 on the fine grid of
    `block_mean` (`shape` = (H, W)), bilinear between coarse cell centres."""
    fy, fx = factor
    coarse = np.asarray(field, dtype=np.float32)
    if (fy, fx) == (1, 1):
        return coarse[..., : shape[0], : shape[1]]
    lead, (h, w) = coarse.shape[:-2], coarse.shape[-2:]
    flat = torch.from_numpy(np.ascontiguousarray(coarse.reshape(-1, 1, h, w)))
    valid = (~torch.isnan(flat)).float()
    size = (h * fy, w * fx)

    def up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    # normalised convolution: missing cells get no weight, and stay missing where all are
    weight = up(valid)
    values = up(torch.nan_to_num(flat, nan=0.0)) / weight.clamp_min(1e-6)
    values = torch.where(weight > 1e-6, values, torch.full_like(values, float("nan")))
    out = values.reshape(*lead, *size).numpy()
    # a missing block's own cells stay missing (neighbours only shape the values in between)
    out[np.isnan(coarse).repeat(fy, axis=-2).repeat(fx, axis=-1)] = np.nan
    return np.ascontiguousarray(out[..., : shape[0], : shape[1]])
