"""The STEPS-style precipitation mask (models.precip_mask)."""

from __future__ import annotations

import numpy as np

from models.precip_mask import rain_mask


def test_full_weight_near_rain_fading_to_zero_over_the_rim() -> None:
    nowcast = np.zeros((2, 64, 64), dtype=np.float32)
    nowcast[0, 30:34, 30:34] = 3.0  # lead 1: a cell; lead 2: dry
    nowcast[0, 0, 0] = np.nan  # no coverage counts as no rain
    weight = rain_mask(nowcast, rim_px=6, buffer_px=2)
    assert weight.shape == nowcast.shape and weight.dtype == np.float32
    assert weight[0, 30:34, 30:34].min() == 1.0
    assert weight[0, 32, 33 + 2] == 1.0  # the buffer: 2 px beyond the last wet pixel
    row = weight[0, 32, 35:50]
    assert np.all(np.diff(row) <= 0) and row[-1] == 0.0  # fades out over the rim
    assert 0.0 < weight[0, 32, 36] < 1.0 and 0.0 < weight[0, 32, 41] < 1.0
    assert weight[0, :8, :8].max() == 0.0  # far from the cell
    assert weight[1].max() == 0.0  # a dry lead keeps nothing


def test_threshold() -> None:
    nowcast = np.full((1, 16, 16), 0.05, dtype=np.float32)  # below 0.1 mm/h: not rain
    assert rain_mask(nowcast, rim_px=3).max() == 0.0
