"""Frames onto the model's time steps (models.interpolation) and pixels (models.regrid)."""

from __future__ import annotations

import numpy as np
import pytest

from models.interpolation import resample_frames, source_frames
from models.regrid import block_mean, upsample

GRID = 64


def _blob(centre_x: float, sigma: float = 3.0) -> np.ndarray:
    y, x = np.mgrid[0:GRID, 0:GRID].astype(np.float32)
    return (20.0 * np.exp(-((y - 32) ** 2 + (x - centre_x) ** 2) / (2 * sigma**2))).astype(
        np.float32
    )


def _centre_x(frame: np.ndarray) -> float:
    return float(frame.sum(axis=0) @ np.arange(GRID) / frame.sum())


def test_motion_compensated_interpolation_moves_the_cell_instead_of_smearing_it() -> None:
    """A cell moving 10 px per 10 min: at 5 min it is half-way and as intense, where a linear
    blend of the two frames would show two half-intensity ghosts."""
    frames = np.stack([_blob(15 + 10 * k) for k in range(4)])
    times = 600.0 * np.arange(4)
    out = resample_frames(frames, times, np.array([300.0, 600.0, 900.0]), tolerance_s=60.0)
    assert out.interpolated.tolist() == [True, False, True]
    np.testing.assert_array_equal(out.rain_mm_h[1], frames[1])  # on time: used as it is
    assert _centre_x(out.rain_mm_h[0]) == pytest.approx(20.0, abs=1.0)
    assert _centre_x(out.rain_mm_h[2]) == pytest.approx(30.0, abs=1.0)
    linear = 0.5 * (frames[0] + frames[1])
    assert out.rain_mm_h[0].max() > 0.8 * frames[0].max() > linear.max()


def test_interpolation_keeps_missing_coverage_and_reads_only_what_it_needs() -> None:
    frames = np.stack([_blob(20), _blob(24), _blob(28)])
    frames[:, :5, :] = np.nan  # no coverage anywhere in these rows
    frames[0, 40:, :5] = np.nan  # missing in one neighbour only: advected values there
    out = resample_frames(frames, np.array([0.0, 360.0, 720.0]), np.array([300.0]), 36.0)
    assert np.isnan(out.rain_mm_h[0, :5]).all()
    assert np.isfinite(out.rain_mm_h[0, 5:]).all()
    # 1-min frames: every 5-min target is a frame; 6-min frames: the pairs around each target
    assert source_frames(60.0 * np.arange(31), 300.0 * np.arange(7), 6.0) == list(range(0, 31, 5))
    assert source_frames(360.0 * np.arange(6), np.array([300.0, 600.0]), 36.0) == [0, 1, 2]
    with pytest.raises(ValueError, match="outside"):
        resample_frames(frames, np.array([0.0, 360.0, 720.0]), np.array([900.0]), 36.0)


def test_block_mean_is_nan_aware_and_takes_partial_blocks() -> None:
    rain = np.arange(30, dtype=np.float32).reshape(1, 5, 6)
    rain[0, 0, 0] = np.nan
    rain[0, 4, :] = np.nan  # the partial last row of blocks is all missing
    coarse = block_mean(rain, (2, 2))
    assert coarse.shape == (1, 3, 3)
    assert coarse[0, 0, 0] == pytest.approx((1 + 6 + 7) / 3)  # the NaN is left out
    assert coarse[0, 1, 2] == pytest.approx((16 + 17 + 22 + 23) / 4)
    assert np.isnan(coarse[0, 2]).all()
    assert block_mean(rain, (1, 1)) is not None and block_mean(rain, (1, 1)).shape == rain.shape


def test_upsample_returns_the_fine_grid_without_bleeding_missing_blocks() -> None:
    coarse = np.full((2, 3, 4, 5), 3.0, dtype=np.float32)
    coarse[..., 0, 0] = np.nan
    fine = upsample(coarse, (2, 2), (7, 9))
    assert fine.shape == (2, 3, 7, 9)
    assert np.isnan(fine[..., :2, :2]).all()  # the missing block's own cells
    np.testing.assert_allclose(fine[..., 2:, :], 3.0)  # a constant stays constant
    # a smooth ramp is interpolated between block centres, not repeated in steps
    ramp = np.tile(np.arange(8, dtype=np.float32), (4, 1))
    row = upsample(ramp, (2, 2), (8, 16))[3]
    assert np.all(np.diff(row[1:-1]) > 0)
    np.testing.assert_allclose(block_mean(upsample(ramp, (2, 2), (8, 16)), (2, 2)), ramp, atol=0.3)
