"""Tiles over grids larger than the trained size: layout, blending, and a tiled forecast."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from models.config import TINY
from models.pipeline import NowcastPipeline
from models.tiling import merge_tiles, split_tiles, tile_layout, tile_weight
from tests.models.helpers import with_config

# trained tile of the test pipeline [px]: small, so that a ~200 px grid needs a 3 x 4 tiling
TILE_PX = 96


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap", "multiple"),
    [(26, 34, 12, 3, 1), (12, 12, 12, 3, 1), (8, 40, 12, 4, 1), (208, 272, 96, 24, 8)],
)
def test_split_merge_round_trip_and_coverage(
    height: int, width: int, tile: int, overlap: int, multiple: int
) -> None:
    layout = tile_layout(height, width, tile, overlap, multiple)
    x = torch.randn(3, 2, height, width, generator=torch.Generator().manual_seed(0))
    tiles = split_tiles(x, layout)
    assert tiles.shape == (3 * layout.count, 2, layout.tile_h, layout.tile_w)
    torch.testing.assert_close(merge_tiles(tiles, layout, tile_weight(layout)), x)
    covered = torch.zeros(height, width)
    for r, c in layout.starts:
        assert r % multiple == 0 and c % multiple == 0
        covered[r : r + layout.tile_h, c : c + layout.tile_w] += 1
    assert (covered >= 1).all()
    rows = sorted({r for r, _ in layout.starts})
    # neighbours overlap by at least overlap - multiple cells
    assert all(b - a <= layout.tile_h - (overlap - multiple) for a, b in itertools.pairwise(rows))


def test_weight_is_smooth_and_strictly_positive() -> None:
    layout = tile_layout(64, 64, 32, 8)
    weight = tile_weight(layout)
    assert weight.shape == (32, 32) and (weight > 0).all() and (weight <= 1).all()
    assert weight[16, 16] == 1 and weight[0, 16] < 0.1
    # a raised-cosine ramp: no jump between neighbouring cells larger than the ramp's slope
    assert weight.diff(dim=1).abs().max() < 0.3


def test_bad_layouts_are_refused() -> None:
    with pytest.raises(ValueError, match="overlap"):
        tile_layout(64, 64, 8, 8)
    with pytest.raises(ValueError, match="multiple"):
        tile_layout(60, 64, 16, 4, multiple=8)


@pytest.fixture(scope="module")
def tiled(tiny_model_dir: Path) -> NowcastPipeline:
    """The tiny model with a trained tile of 96 px (its ONNX codec takes up to 256 px)."""
    base = NowcastPipeline.from_model_dir(tiny_model_dir, denoiser_precision="float32")
    config = base.config.replace(max_grid_px=TILE_PX)
    return with_config(base, config, tile_rows=8)


def _rain(height: int, width: int, seed: int = 0) -> np.ndarray:
    """`(7, H, W)` mm/h: a few smooth cells of up to ~20 mm/h drifting east."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = np.zeros((TINY.frames_in, height, width), np.float32)
    for _ in range(6):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        for t in range(TINY.frames_in):
            frames[t] += 15 * np.exp(-((y - cy) ** 2 + (x - cx - 2 * t) ** 2) / (2 * 18.0**2))
    frames[frames < 0.05] = 0.0
    return frames


def test_forecast_on_a_grid_larger_than_the_tile(tiled: NowcastPipeline) -> None:
    """An odd-sized grid (padded to 16 px, 3 x 4 tiles) keeps the input's shape and its gaps,
    and a seed still fixes the forecast."""
    past = _rain(201, 263)
    past[-1, :30, 100:140] = np.nan  # no coverage in the last frame: missing in the output
    past[2, 150:, :50] = np.nan  # an earlier gap only: read as no rain
    forecast = tiled.forecast(past, members=2, steps=2, seed=7)
    assert forecast.shape == (2, TINY.frames_out, 201, 263)
    missing = np.isnan(forecast)
    assert missing[:, :, :30, 100:140].all()
    assert missing.sum() == 2 * TINY.frames_out * 30 * 40
    again = tiled.forecast(past, members=2, steps=2, seed=7)
    np.testing.assert_array_equal(forecast, again)


def _column_jumps(forecast: np.ndarray, borders: list[int]) -> tuple[float, float]:
    """Mean |f[j] - f[j - 1]| over border columns j and over the other columns that are
    multiples of 8 (the same phase of the VAE's 8 px upsampling, whose own 8 px structure must
    not count as a seam)."""
    width = forecast.shape[-1]
    interior = [j for j in range(8, width, 8) if j not in borders]
    jump = np.abs(np.diff(forecast, axis=-1))  # jump[..., j - 1] = |f[j] - f[j - 1]|
    return (
        float(jump[..., [j - 1 for j in borders]].mean()),
        float(jump[..., [j - 1 for j in interior]].mean()),
    )


def test_no_seams_at_tile_borders() -> None:
    """The shipped model on a 192 x 256 grid run as 2 x 3 tiles of 128 px (its trained tile is
    256 px; halved so that the grid stays small): across tile borders neighbouring columns differ
    no more than inside tiles. A random-weight model cannot show this: its tiles disagree about
    everything, which is what blending hides in a trained model. The input is a statistically
    uniform rain texture drifting east, so that no column is wetter than another on average."""
    from scipy.ndimage import gaussian_filter

    from models.metadata import DEFAULT_MODEL_DIR

    if not (Path(DEFAULT_MODEL_DIR) / "model.yaml").exists():
        pytest.skip(f"no shipped model in {DEFAULT_MODEL_DIR}")
    shipped = NowcastPipeline.from_model_dir(DEFAULT_MODEL_DIR)
    tile_px = 128
    model = with_config(shipped, shipped.config.replace(max_grid_px=tile_px))
    height, width = 192, 256
    field = gaussian_filter(
        np.random.default_rng(0).standard_normal((height, width + 20)), 5, mode="wrap"
    )
    field /= field.std()
    past = np.stack([np.roll(field, 2 * t, axis=1)[:, :width] for t in range(7)])
    past = np.where(past > 0, 3 * np.exp(past), 0).astype(np.float32)
    forecast = model.forecast(past, members=2, steps=3, seed=1)
    layout = tile_layout(height // 8, width // 8, tile_px // 8, model._tile_overlap)
    assert layout.count == 6
    borders = sorted(
        j for _, c in layout.starts for j in (8 * c, 8 * (c + layout.tile_w)) if 0 < j < width
    )
    at_borders, inside = _column_jumps(forecast, borders)
    assert at_borders <= inside, (at_borders, inside)
    # the measure sees a seam: two members stitched together at column 128
    stitched = np.concatenate([forecast[:1, ..., :128], forecast[1:, ..., 128:]], axis=-1)
    seam, rest = _column_jumps(stitched, [128])
    assert seam > 1.2 * rest
