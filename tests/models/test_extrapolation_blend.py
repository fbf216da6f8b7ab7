"""Blending the extrapolation nowcast into the members (models.extrapolation_blend)."""

from __future__ import annotations

import numpy as np
import pytest

from models.extrapolation_blend import blend_with_extrapolation
from models.units import denormalise_rain, normalise_rain

RAIN_MAX = 128.0


def _fields(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    members = rng.gamma(0.5, 4.0, size=(3, 4, 16, 16)).astype(np.float32)
    nowcast = rng.gamma(0.5, 2.0, size=(4, 16, 16)).astype(np.float32)
    return members, nowcast


def test_each_lead_is_a_weighted_mean_in_normalised_rain_space() -> None:
    members, nowcast = _fields(0)
    before = members.copy()
    weights = [1.0, 0.5, 0.25, 0.0]
    blended = blend_with_extrapolation(members, nowcast, weights, RAIN_MAX)
    assert blended is members  # in place
    # weight 1: the extrapolation itself; weight 0: the member untouched
    np.testing.assert_allclose(blended[:, 0], np.broadcast_to(nowcast[0], (3, 16, 16)), rtol=1e-5)
    np.testing.assert_array_equal(blended[:, 3], before[:, 3])
    for lead in (1, 2):
        w = weights[lead]
        expected = denormalise_rain(
            (1 - w) * normalise_rain(before[:, lead], RAIN_MAX)
            + w * normalise_rain(nowcast[lead], RAIN_MAX),
            RAIN_MAX,
        )
        np.testing.assert_allclose(blended[:, lead], expected, rtol=1e-5, atol=1e-6)
    # a blend lies between its two fields, pixel by pixel
    low = np.minimum(before[:, 1], nowcast[1]) - 1e-5
    high = np.maximum(before[:, 1], nowcast[1]) + 1e-5
    assert ((blended[:, 1] >= low) & (blended[:, 1] <= high)).all()


def test_dry_members_and_a_dry_nowcast_stay_dry() -> None:
    members = np.zeros((2, 4, 8, 8), dtype=np.float32)
    blend_with_extrapolation(members, np.zeros((4, 8, 8)), [0.4, 0.3, 0.2, 0.1], RAIN_MAX)
    assert members.max() == 0.0


def test_shapes_are_checked() -> None:
    members, nowcast = _fields(1)
    with pytest.raises(ValueError, match=r"\(M, T, H, W\)"):
        blend_with_extrapolation(members, nowcast[:3], [0.1] * 3, RAIN_MAX)
    with pytest.raises(ValueError, match="3 blend weights for 4 leads"):
        blend_with_extrapolation(members, nowcast, [0.1] * 3, RAIN_MAX)
