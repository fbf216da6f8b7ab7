"""Verification metrics: agreement with pysteps.verification and their defining properties."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from models.evaluation import metrics


def _rain(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Rain-like field [mm h-1]: mostly dry, a heavy tail, exact zeros (ties)."""
    return np.maximum(rng.gamma(0.5, 3.0, size=shape) - 0.6, 0.0)


@pytest.fixture
def fields() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    observed = _rain(rng, (48, 56))
    forecast = _rain(rng, (48, 56))
    members = _rain(rng, (12, 48, 56))
    return forecast, observed, members


@pytest.mark.parametrize("threshold", [0.1, 1.0, 5.0])
def test_csi_equals_pysteps(fields: tuple[np.ndarray, ...], threshold: float) -> None:
    detcat = importlib.import_module("pysteps.verification.detcatscores")
    forecast, observed, _ = fields
    expected = detcat.det_cat_fct(forecast, observed, threshold, ["CSI"])["CSI"]
    assert metrics.csi(forecast, observed, threshold) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("window_px", [1, 3, 8])
def test_fss_equals_pysteps(fields: tuple[np.ndarray, ...], window_px: int) -> None:
    spatial = importlib.import_module("pysteps.verification.spatialscores")
    forecast, observed, _ = fields
    forecast = forecast.copy()
    forecast[:3, :5] = np.nan  # pySTEPS: below threshold; ours: 0 mm/h, the same event count
    expected = spatial.fss(forecast, observed, 1.0, window_px)
    assert metrics.fss(forecast, observed, 1.0, window_px) == pytest.approx(expected, abs=1e-12)


def test_mae_equals_pysteps(fields: tuple[np.ndarray, ...]) -> None:
    detcont = importlib.import_module("pysteps.verification.detcontscores")
    forecast, observed, _ = fields
    expected = detcont.det_cont_fct(forecast, observed, ["MAE"])["MAE"]
    assert metrics.mae(forecast, observed) == pytest.approx(expected, rel=1e-12)


def test_crps_equals_pysteps_with_ties(fields: tuple[np.ndarray, ...]) -> None:
    probscores = importlib.import_module("pysteps.verification.probscores")
    _, observed, members = fields
    expected = probscores.CRPS(members, observed)
    assert metrics.crps_ensemble(members, observed) == pytest.approx(expected, rel=1e-12)
    # ties between the observation and members (both 0 mm/h) are what pySTEPS under-counts
    assert metrics.crps_ensemble_exact(members, observed) > expected


def test_crps_forms_agree_without_ties() -> None:
    probscores = importlib.import_module("pysteps.verification.probscores")
    rng = np.random.default_rng(3)
    members, observed = rng.normal(size=(9, 30, 20)), rng.normal(size=(30, 20))
    expected = probscores.CRPS(members, observed)
    assert metrics.crps_ensemble(members, observed) == pytest.approx(expected, rel=1e-12)
    assert metrics.crps_ensemble_exact(members, observed) == pytest.approx(expected, rel=1e-12)


def test_rank_histogram_equals_pysteps_without_ties() -> None:
    ensscores = importlib.import_module("pysteps.verification.ensscores")
    rng = np.random.default_rng(5)
    members, observed = rng.normal(size=(7, 40, 40)), rng.normal(size=(40, 40))
    expected = ensscores.rankhist(members, observed, None, normalize=False)
    counts = metrics.rank_histogram(members, observed, np.random.default_rng(0), min_mm_h=None)
    np.testing.assert_array_equal(counts, expected)


def test_rank_histogram_ties_follow_pysteps_rule() -> None:
    """With ties pySTEPS draws ranks from the global RNG: the same pixels, close counts."""
    ensscores = importlib.import_module("pysteps.verification.ensscores")
    rng = np.random.default_rng(9)
    members, observed = _rain(rng, (12, 120, 120)), _rain(rng, (120, 120))
    expected = ensscores.rankhist(members, observed, 0.1, normalize=False)
    counts = metrics.rank_histogram(members, observed, np.random.default_rng(0), min_mm_h=0.1)
    assert counts.sum() == expected.sum()
    # only the tie-breaking draws differ (~2 % of the counts move between bins)
    assert np.abs(counts - expected).sum() / counts.sum() < 0.06


def test_perfect_forecast_scores(fields: tuple[np.ndarray, ...]) -> None:
    _, observed, _ = fields
    for threshold in (0.1, 1.0, 5.0):
        assert metrics.csi(observed, observed, threshold) == 1.0
    assert metrics.fss(observed, observed, 1.0, 8) == 1.0
    assert metrics.mae(observed, observed) == 0.0
    members = np.broadcast_to(observed, (5, *observed.shape))
    assert metrics.crps_ensemble(members, observed) == 0.0
    assert metrics.crps_ensemble_exact(members, observed) == pytest.approx(0.0, abs=1e-12)


def test_crps_of_one_member_is_mae(fields: tuple[np.ndarray, ...]) -> None:
    forecast, observed, _ = fields
    assert metrics.crps_ensemble(forecast[None], observed) == pytest.approx(
        metrics.mae(forecast, observed), rel=1e-12
    )


def test_non_finite_forecast_counts_as_zero(fields: tuple[np.ndarray, ...]) -> None:
    forecast, observed, members = fields
    holed = forecast.copy()
    holed[10:20, 10:20] = np.nan
    holed[0, 0] = np.inf
    zeroed = np.nan_to_num(holed, nan=0.0, posinf=0.0)
    assert metrics.csi(holed, observed, 1.0) == metrics.csi(zeroed, observed, 1.0)
    assert metrics.mae(holed, observed) == metrics.mae(zeroed, observed)
    assert metrics.fss(holed, observed, 1.0, 8) == metrics.fss(zeroed, observed, 1.0, 8)
    members = members.copy()
    members[:, 5, 5] = np.nan
    assert metrics.crps_ensemble(members, observed) == metrics.crps_ensemble(
        np.nan_to_num(members, nan=0.0), observed
    )


def test_missing_observations_are_left_out(fields: tuple[np.ndarray, ...]) -> None:
    forecast, observed, _ = fields
    holed = observed.copy()
    holed[:, :10] = np.nan
    assert metrics.mae(forecast, holed) == pytest.approx(
        np.mean(np.abs(forecast[:, 10:] - observed[:, 10:]))
    )
    assert metrics.csi(forecast, holed, 1.0) == metrics.csi(forecast[:, 10:], observed[:, 10:], 1.0)


def test_undefined_scores_are_nan() -> None:
    dry = np.zeros((16, 16))
    assert np.isnan(metrics.csi(dry, dry, 1.0))
    assert np.isnan(metrics.fss(dry, dry, 1.0, 8))
    assert np.isnan(metrics.rank_histogram_flatness(np.zeros(4)))


def test_box_mean_matches_scipy_uniform_filter() -> None:
    ndimage = importlib.import_module("scipy.ndimage")
    field = np.random.default_rng(1).random((23, 31))
    for size in (2, 3, 8):
        expected = ndimage.uniform_filter(field, size=size, mode="constant", cval=0.0)
        np.testing.assert_allclose(metrics._box_mean(field, size), expected, atol=1e-12)


def test_rank_histogram_flatness_separates_calibrated_from_underdispersive() -> None:
    rng = np.random.default_rng(11)
    truth = rng.normal(size=(60, 60))
    calibrated = rng.normal(size=(10, 60, 60))
    narrow = 0.2 * rng.normal(size=(10, 60, 60))  # too little spread: a U-shaped histogram
    flat = metrics.rank_histogram_flatness(
        metrics.rank_histogram(calibrated, truth, rng, min_mm_h=None)
    )
    u_shape = metrics.rank_histogram_flatness(
        metrics.rank_histogram(narrow, truth, rng, min_mm_h=None)
    )
    assert flat > 0.9
    assert u_shape < 0.6
    assert metrics.rank_histogram_flatness(np.full(11, 3)) == 1.0
    assert metrics.rank_histogram_flatness(np.eye(11)[4] * 50) == pytest.approx(0.0, abs=1e-12)


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="shape"):
        metrics.mae(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="members"):
        metrics.crps_ensemble(np.zeros((3, 4, 4)), np.zeros((4, 5)))
