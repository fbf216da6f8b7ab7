"""The protocol's scores of one forecast: per lead time, then the mean over leads.

BASELINES.md: CSI at 0.1/1/5/10 mm/h, FSS at 1 mm/h over 8 km, MAE, ensemble CRPS, each per lead
and then averaged over the leads (a lead where the score is 0/0 is skipped). An ensemble is scored
by its mean for CSI/FSS/MAE and by its members for CRPS; its `_member` row averages the scores of
each member. Rank-histogram flatness (ours, not in the baseline table) is computed from one
histogram accumulated over all leads of a case.

`per_lead_scores` keeps the leads apart instead, for the acceptance bars that must hold at every
lead (CSI@1 of the ensemble mean, wet-pixel fraction of the forecast against the observed one).
"""

from __future__ import annotations

import warnings

import numpy as np

from models.evaluation import metrics

CSI_THRESHOLDS_MM_H = (0.1, 1.0, 5.0, 10.0)
FSS_THRESHOLD_MM_H = 1.0
FSS_WINDOW_KM = 8.0
SCORE_NAMES = (
    "CSI@0.1",
    "CSI@1",
    "CSI@5",
    "CSI@10",
    "FSS@1mm/8km",
    "MAE",
    "CRPS",
    "rank_flatness",
)
MEMBER_SUFFIX = "_member"
WET_THRESHOLD_MM_H = 1.0  # a wet pixel is strictly above this, as a CSI event
PER_LEAD_NAMES = (f"CSI@{WET_THRESHOLD_MM_H:g}", "wet_fraction", "observed_wet_fraction")


def _mean_over_leads(values: list[float]) -> float:
    values_arr = np.asarray(values, dtype=np.float64)
    if np.all(np.isnan(values_arr)):
        return float("nan")
    return float(np.nanmean(values_arr))


def deterministic_scores(
    forecast: np.ndarray, observed: np.ndarray, pixel_size_km: float = 1.0
) -> dict[str, float]:
    """CSI, FSS and MAE of one deterministic forecast, each averaged over the leads.

    forecast (`(T, H, W)` float): rain rate [mm h-1], non-finite counts as 0.
    observed (`(T, H, W)` float): rain rate [mm h-1].
    pixel_size_km: grid spacing, sets the FSS window (8 km -> 8 px at 1 km).
    """
    if forecast.shape != observed.shape:
        raise ValueError(f"forecast {forecast.shape} and observed {observed.shape} differ")
    window_px = max(1, round(FSS_WINDOW_KM / pixel_size_km))
    scores: dict[str, float] = {}
    for threshold in CSI_THRESHOLDS_MM_H:
        per_lead = [metrics.csi(f, o, threshold) for f, o in zip(forecast, observed, strict=True)]
        scores[f"CSI@{threshold:g}"] = _mean_over_leads(per_lead)
    per_lead = [
        metrics.fss(f, o, FSS_THRESHOLD_MM_H, window_px)
        for f, o in zip(forecast, observed, strict=True)
    ]
    scores[f"FSS@{FSS_THRESHOLD_MM_H:g}mm/{FSS_WINDOW_KM:g}km"] = _mean_over_leads(per_lead)
    scores["MAE"] = _mean_over_leads(
        [metrics.mae(f, o) for f, o in zip(forecast, observed, strict=True)]
    )
    return scores


def ensemble_crps(members: np.ndarray, observed: np.ndarray) -> float:
    """Ensemble CRPS [mm h-1] (pySTEPS' definition) averaged over the leads.

    members (`(M, T, H, W)` float): rain rate [mm h-1]; observed (`(T, H, W)`).
    """
    return _mean_over_leads(
        [metrics.crps_ensemble(members[:, lead], observed[lead]) for lead in range(len(observed))]
    )


def score_forecast(
    members: np.ndarray,
    observed: np.ndarray,
    rng: np.random.Generator,
    pixel_size_km: float = 1.0,
    member_row: bool = True,
) -> dict[str, dict[str, float]]:
    """All protocol scores of one forecast against the observed future.

    Parameters
    ----------
    members : (`(M, T, H, W)` float): the forecast, rain rate [mm h-1], members first (M = 1 for
        a deterministic method); non-finite values count as 0.
    observed : (`(T, H, W)` float): the observed future, rain rate [mm h-1].
    rng : breaks ties in the rank histogram.
    pixel_size_km : grid spacing [km] (FSS window).
    member_row : with M > 1, also score each member and average (the `_member` row).

    Returns
    -------
    `{"": scores, "_member": scores}` keyed by row suffix; each `scores` maps every name of
    `SCORE_NAMES` to a float (NaN where undefined, e.g. rank flatness of one member).
    """
    if members.ndim != 4 or members.shape[1:] != observed.shape:
        raise ValueError(
            f"members {members.shape} must be (M, T, H, W) with (T, H, W) = {observed.shape}"
        )
    members = metrics.finite_or_zero(members)
    crps = ensemble_crps(members, observed)
    if members.shape[0] > 1:
        counts = sum(
            metrics.rank_histogram(members[:, lead], observed[lead], rng)
            for lead in range(len(observed))
        )
        flatness = metrics.rank_histogram_flatness(counts)
    else:
        flatness = float("nan")
    ensemble_mean = members.mean(axis=0)
    rows = {"": {**deterministic_scores(ensemble_mean, observed, pixel_size_km)}}
    rows[""].update(CRPS=crps, rank_flatness=flatness)
    if member_row and members.shape[0] > 1:
        per_member = [deterministic_scores(m, observed, pixel_size_km) for m in members]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
            member_mean = {
                name: float(np.nanmean([scores[name] for scores in per_member]))
                for name in per_member[0]
            }
        rows[MEMBER_SUFFIX] = {**member_mean, "CRPS": crps, "rank_flatness": flatness}
    return {suffix: {name: row[name] for name in SCORE_NAMES} for suffix, row in rows.items()}


def per_lead_scores(members: np.ndarray, observed: np.ndarray) -> dict[str, list[float]]:
    """CSI@1 of the ensemble mean and the wet-pixel fractions, one value per lead.

    Parameters
    ----------
    members : (`(M, T, H, W)` float): the forecast, rain rate [mm h-1], members first (M = 1 for
        a deterministic method); non-finite values count as 0.
    observed : (`(T, H, W)` float): the observed future, rain rate [mm h-1]; non-finite pixels
        (no coverage) are left out of every score.

    Returns
    -------
    `{name: [value per lead]}` for each name of `PER_LEAD_NAMES`, each list of length T:
    - "CSI@1": `metrics.csi` of the ensemble mean at 1 mm/h (NaN where 0/0, i.e. no event in
      either field);
    - "wet_fraction": fraction of pixels above 1 mm/h, averaged over the members;
    - "observed_wet_fraction": the same for the observation.
    The fractions are over the covered pixels so that both sides count the same pixels; they are
    NaN at a lead without any.
    """
    if members.ndim != 4 or members.shape[1:] != observed.shape:
        raise ValueError(
            f"members {members.shape} must be (M, T, H, W) with (T, H, W) = {observed.shape}"
        )
    members = metrics.finite_or_zero(members)
    observed = np.asarray(observed, dtype=np.float64)
    ensemble_mean = members.mean(axis=0)
    csi, wet, observed_wet = [], [], []
    for lead in range(len(observed)):
        covered = np.isfinite(observed[lead])
        csi.append(metrics.csi(ensemble_mean[lead], observed[lead], WET_THRESHOLD_MM_H))
        if covered.any():
            # the mean over members of each member's fraction = the fraction of all member pixels
            wet.append(float(np.mean(members[:, lead][:, covered] > WET_THRESHOLD_MM_H)))
            observed_wet.append(float(np.mean(observed[lead][covered] > WET_THRESHOLD_MM_H)))
        else:
            wet.append(float("nan"))
            observed_wet.append(float("nan"))
    return dict(zip(PER_LEAD_NAMES, (csi, wet, observed_wet), strict=True))
