"""Verification metrics for rain-rate nowcasts, as plain NumPy functions.

Every function scores one field (or one ensemble of fields) against its observation; the
protocol's averaging over lead times lives in `models.evaluation.scoring`. The definitions match
`pysteps.verification` (a test checks each one on the same arrays) so that our scores compare with
the pySTEPS baseline table, but nothing here imports pySTEPS or SciPy.

Conventions shared by all functions:
- rain rates are in mm h-1; forecasts may be float32 or float64.
- a non-finite forecast value counts as 0 mm/h (pySTEPS marks pixels advected in from outside
  the domain as NaN; the protocol scores them as dry).
- a non-finite observed value marks a pixel without coverage: it is left out of the score
  (for FSS it counts as below the threshold, as in pySTEPS).
"""

from __future__ import annotations

import numpy as np

RANK_HISTOGRAM_MIN_MM_H = (
    0.1  # pairs where the observation and all members are below it are skipped
)


def finite_or_zero(forecast: np.ndarray) -> np.ndarray:
    """A float64 copy of `forecast` [mm h-1] with non-finite values replaced by 0 mm/h."""
    out = np.array(forecast, dtype=np.float64, copy=True)
    out[~np.isfinite(out)] = 0.0
    return out


def _check_same_shape(forecast: np.ndarray, observed: np.ndarray) -> None:
    if np.shape(forecast) != np.shape(observed):
        raise ValueError(
            f"forecast shape {np.shape(forecast)} differs from observed shape {np.shape(observed)}"
        )


def csi(forecast: np.ndarray, observed: np.ndarray, threshold_mm_h: float) -> float:
    """Critical success index hits / (hits + misses + false alarms) of one field.

    Parameters
    ----------
    forecast : (`(H, W)` or any shape, float): rain rate [mm h-1]; non-finite counts as 0.
    observed : same shape as `forecast`: rain rate [mm h-1]; non-finite pixels are left out.
    threshold_mm_h : an event is a rate strictly above this [mm h-1] (pySTEPS' `det_cat_fct`).

    Returns
    -------
    CSI in [0, 1]; NaN when neither field has an event (0/0).
    """
    _check_same_shape(forecast, observed)
    observed = np.asarray(observed, dtype=np.float64)
    valid = np.isfinite(observed)
    forecast_yes = finite_or_zero(forecast)[valid] > threshold_mm_h
    observed_yes = observed[valid] > threshold_mm_h
    hits = np.count_nonzero(forecast_yes & observed_yes)
    misses = np.count_nonzero(~forecast_yes & observed_yes)
    false_alarms = np.count_nonzero(forecast_yes & ~observed_yes)
    total = hits + misses + false_alarms
    return float(hits / total) if total else float("nan")


def _box_mean(field: np.ndarray, window_px: int) -> np.ndarray:
    """Mean over a `window_px` square around each pixel, zeros outside the field.

    The window covers offsets `-(window_px // 2)` .. `window_px - 1 - window_px // 2`, the
    alignment of `scipy.ndimage.uniform_filter(mode="constant")` for odd and even sizes.
    """
    before = window_px // 2
    after = window_px - 1 - before
    padded = np.pad(field, ((before + 1, after), (before + 1, after)))
    # integral image with a leading zero row/column: window sum = four corner lookups
    integral = padded.cumsum(axis=0).cumsum(axis=1)
    height, width = field.shape
    w = window_px
    total = (
        integral[w : w + height, w : w + width]
        - integral[0:height, w : w + width]
        - integral[w : w + height, 0:width]
        + integral[0:height, 0:width]
    )
    return total / (w * w)


def fss(forecast: np.ndarray, observed: np.ndarray, threshold_mm_h: float, window_px: int) -> float:
    """Fractions skill score of one field (Roberts and Lean 2008).

    Parameters
    ----------
    forecast : (`(H, W)` float): rain rate [mm h-1]; non-finite counts as 0.
    observed : (`(H, W)` float): rain rate [mm h-1]; non-finite counts as below the threshold.
    threshold_mm_h : an event is a rate at or above this [mm h-1] (pySTEPS' `fss`).
    window_px : side of the square neighbourhood in pixels (8 px = 8 km on the 1 km grid);
        outside the field counts as no event.

    Returns
    -------
    FSS in [0, 1]; NaN when neither field has an event (0/0).
    """
    _check_same_shape(forecast, observed)
    if np.ndim(forecast) != 2:
        raise ValueError(f"fss scores one 2-D field; got shape {np.shape(forecast)}")
    observed = np.asarray(observed, dtype=np.float64)
    forecast_yes = (finite_or_zero(forecast) >= threshold_mm_h).astype(np.float64)
    observed_yes = (np.isfinite(observed) & (observed >= threshold_mm_h)).astype(np.float64)
    if window_px > 1:
        forecast_frac = _box_mean(forecast_yes, window_px)
        observed_frac = _box_mean(observed_yes, window_px)
    else:
        forecast_frac, observed_frac = forecast_yes, observed_yes
    sum_fct_sq = np.sum(forecast_frac**2)
    sum_obs_sq = np.sum(observed_frac**2)
    reference = sum_fct_sq + sum_obs_sq
    if reference == 0:
        return float("nan")
    return float(1.0 - np.sum((forecast_frac - observed_frac) ** 2) / reference)


def mae(forecast: np.ndarray, observed: np.ndarray) -> float:
    """Mean absolute error [mm h-1] over the pixels with a finite observation.

    Parameters
    ----------
    forecast : (any shape, float): rain rate [mm h-1]; non-finite counts as 0.
    observed : same shape: rain rate [mm h-1]; non-finite pixels are left out.
    """
    _check_same_shape(forecast, observed)
    observed = np.asarray(observed, dtype=np.float64)
    valid = np.isfinite(observed)
    if not valid.any():
        return float("nan")
    return float(np.mean(np.abs(finite_or_zero(forecast)[valid] - observed[valid])))


def _members_and_observed(members: np.ndarray, observed: np.ndarray) -> tuple[np.ndarray, ...]:
    """(pixels, M) forecasts and (pixels,) observations over the finite observations."""
    members = np.asarray(members)
    if members.shape[1:] != np.shape(observed):
        raise ValueError(
            f"members shape {members.shape} must be (M, *observed.shape) with observed shape "
            f"{np.shape(observed)}"
        )
    observed = np.asarray(observed, dtype=np.float64).reshape(-1)
    forecast = finite_or_zero(members).reshape(members.shape[0], -1).T
    valid = np.isfinite(observed)
    return forecast[valid], observed[valid]


def crps_ensemble(members: np.ndarray, observed: np.ndarray) -> float:
    """Ensemble CRPS [mm h-1], Hersbach's (2000) decomposition as in pySTEPS' `probscores.CRPS`.

    The CDF of the M members is the empirical step function; the score is the mean over pixels of
    the integral of (F(x) - H(x - y))^2. With one member it equals the absolute error (MAE).

    pySTEPS' decomposition uses strict inequalities, so when the observation equals a member
    value (typically both 0 mm/h) the two member intervals touching it add nothing; this function
    reproduces that exactly so our scores compare with the baseline table. `crps_ensemble_exact`
    gives the textbook value, which is larger by that missing part.

    Parameters
    ----------
    members : (`(M, *S)` float, members first): rain rate [mm h-1]; non-finite counts as 0.
    observed : (`S` float): rain rate [mm h-1]; non-finite pixels are left out.
    """
    forecast, observed = _members_and_observed(members, observed)
    if observed.size == 0:
        return float("nan")
    forecast = np.sort(forecast, axis=1)
    n_members = forecast.shape[1]
    obs = observed[:, None]
    # alpha: length of each CDF step interval below the observation, beta: above it
    lower, upper = forecast[:, :-1], forecast[:, 1:]
    above = obs > upper
    inside = (upper > obs) & (obs > lower)
    below = obs < lower
    alpha_mid = np.where(above, upper - lower, np.where(inside, obs - lower, 0.0))
    beta_mid = np.where(inside, upper - obs, np.where(below, upper - lower, 0.0))
    beta_first = np.where(observed < forecast[:, 0], forecast[:, 0] - observed, 0.0)
    alpha_last = np.where(forecast[:, -1] < observed, observed - forecast[:, -1], 0.0)
    cdf_level = np.arange(1, n_members) / n_members  # F on the interval after member i
    per_pixel = (
        beta_first
        + alpha_last
        + np.sum(alpha_mid * cdf_level**2 + beta_mid * (1.0 - cdf_level) ** 2, axis=1)
    )
    return float(np.mean(per_pixel))


def crps_ensemble_exact(members: np.ndarray, observed: np.ndarray) -> float:
    """Textbook ensemble CRPS [mm h-1]: E|X - y| - E|X - X'| / 2 over the M members.

    Equals `crps_ensemble` when no observation ties with a member value; see its note.
    Same array contract as `crps_ensemble`.
    """
    forecast, observed = _members_and_observed(members, observed)
    if observed.size == 0:
        return float("nan")
    forecast = np.sort(forecast, axis=1)
    n_members = forecast.shape[1]
    error = np.mean(np.abs(forecast - observed[:, None]), axis=1)
    # sum over pairs |x_i - x_j| of sorted members = 2 * sum_i (2i - M - 1) x_(i), i = 1..M
    weights = 2.0 * np.arange(1, n_members + 1) - n_members - 1
    spread = 2.0 * (forecast @ weights) / n_members**2
    return float(np.mean(error - 0.5 * spread))


def rank_histogram(
    members: np.ndarray,
    observed: np.ndarray,
    rng: np.random.Generator,
    min_mm_h: float | None = RANK_HISTOGRAM_MIN_MM_H,
) -> np.ndarray:
    """Counts of the observation's rank among the members (Talagrand diagram), as pySTEPS.

    Parameters
    ----------
    members : (`(M, *S)` float, members first): rain rate [mm h-1]; non-finite counts as 0.
    observed : (`S` float): rain rate [mm h-1]; non-finite pixels are left out.
    rng : breaks ties: an observation equal to k members gets a uniform rank among the k + 1
        tied positions (pySTEPS draws from the global NumPy state instead).
    min_mm_h : pixels where the observation and every member are below it are skipped, and
        values below it count as equal (dry); None uses every pixel.

    Returns
    -------
    (`(M + 1,)` int64): count of pixels whose observation has rank 0 (below every member) .. M.
    """
    forecast, observed = _members_and_observed(members, observed)
    n_members = forecast.shape[1]
    if min_mm_h is not None:
        wet = (observed >= min_mm_h) | np.any(forecast >= min_mm_h, axis=1)
        forecast, observed = forecast[wet], observed[wet]
        dry_value = min_mm_h - 1.0
        forecast = np.where(forecast < min_mm_h, dry_value, forecast)
        observed = np.where(observed < min_mm_h, dry_value, observed)
    n_below = np.sum(forecast < observed[:, None], axis=1)
    n_equal = np.sum(forecast == observed[:, None], axis=1)
    rank = n_below + np.floor(rng.uniform(size=observed.size) * (n_equal + 1)).astype(np.int64)
    return np.bincount(rank, minlength=n_members + 1).astype(np.int64)


def rank_histogram_flatness(counts: np.ndarray) -> float:
    """How flat a rank histogram is: 1 = perfectly flat, 0 = all counts in one bin.

    With bin frequencies p_k (k = 0..M) and the flat frequency 1/(M+1), the measure is
    1 - TV / TV_max, where TV = sum_k |p_k - 1/(M+1)| / 2 is the total-variation distance to the
    flat histogram and TV_max = 1 - 1/(M+1) its largest possible value. An under-dispersive
    ensemble (U shape) or a biased one (one-sided) scores low.

    Parameters
    ----------
    counts : (`(M + 1,)` int or float): rank-histogram counts, e.g. from `rank_histogram`.

    Returns
    -------
    flatness in [0, 1]; NaN when the histogram is empty or has a single bin.
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    n_bins = counts.size
    if total <= 0 or n_bins < 2:
        return float("nan")
    flat = 1.0 / n_bins
    distance = 0.5 * np.sum(np.abs(counts / total - flat))
    return float(1.0 - distance / (1.0 - flat))
