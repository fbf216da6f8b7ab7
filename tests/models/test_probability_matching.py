"""Probability matching to the extrapolation nowcast (models.probability_matching)."""

from __future__ import annotations

import numpy as np
import pytest

from models.probability_matching import match_to_extrapolation


def _fields(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    members = rng.gamma(0.5, 4.0, size=(3, 2, 24, 24)).astype(np.float32)
    members[members < 1.0] = 0.0  # dry pixels, as a forecast has them
    target = rng.gamma(0.5, 1.0, size=(2, 24, 24)).astype(np.float32)
    target[target < 0.05] = 0.0  # wetter than the members: their wet area is kept
    return members, target


def test_members_keep_their_ranks_and_take_the_targets_values() -> None:
    members, target = _fields(0)
    before = members.copy()
    matched = match_to_extrapolation(members, target)
    assert matched is members  # in place
    for m in range(3):
        for t in range(2):
            wet = before[m, t] > 0
            assert np.array_equal(matched[m, t] > 0, wet)  # where it rains does not change
            # the wettest pixels of the member get the target's largest values, in order
            assert np.array_equal(np.argsort(matched[m, t][wet]), np.argsort(before[m, t][wet]))
            top = np.sort(target[t].ravel())[::-1][: wet.sum()]
            np.testing.assert_allclose(np.sort(matched[m, t][wet])[::-1], top, rtol=1e-6)
    assert matched.max() <= target.max() + 1e-6 < before.max()


def test_a_drier_extrapolation_dries_the_members_weakest_rain() -> None:
    members, target = _fields(4)
    target[target < 1.0] = 0.0  # fewer wet pixels than any member
    before = members.copy()
    matched = match_to_extrapolation(members, target)
    for m in range(3):
        for t in range(2):
            wet = matched[m, t] > 0
            assert wet.sum() == (target[t] > 0).sum()
            # what stays wet is the member's strongest rain
            assert before[m, t][wet].min() >= before[m, t][~wet].max()


def test_keep_mean_restores_each_fields_mean() -> None:
    members, target = _fields(1)
    means = members.mean(axis=(2, 3))
    matched = match_to_extrapolation(members.copy(), target, keep_mean=True)
    np.testing.assert_allclose(matched.mean(axis=(2, 3)), means, rtol=1e-5)
    # the shape of the distribution is the target's: the member's own values are gone
    plain = match_to_extrapolation(members.copy(), target)
    shape = matched / matched.mean(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(shape, plain / plain.mean(axis=(2, 3), keepdims=True), rtol=1e-4)


def test_dry_stays_dry_and_uncovered_pixels_are_left_alone() -> None:
    members, target = _fields(2)
    members[1] = 0.0
    covered = np.ones((24, 24), dtype=bool)
    covered[:, :6] = False
    members[..., ~covered] = np.nan
    target[..., 0, 0] = np.nan  # no extrapolation there: counts as no rain
    matched = match_to_extrapolation(members, target, covered=covered)
    assert np.nanmax(matched[1]) == 0.0
    assert np.isnan(matched[..., ~covered]).all() and np.isfinite(matched[..., covered]).all()


def test_shapes_are_checked() -> None:
    members, target = _fields(3)
    with pytest.raises(ValueError, match=r"\(M, T, H, W\)"):
        match_to_extrapolation(members, target[:1])


def test_threads_give_the_same_fields() -> None:
    members, target = _fields(2)
    alone = match_to_extrapolation(members.copy(), target, keep_mean=True)
    pooled = match_to_extrapolation(members.copy(), target, keep_mean=True, threads=3)
    np.testing.assert_array_equal(pooled, alone)
