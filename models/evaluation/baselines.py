"""Baseline nowcasts with the settings of `shared/BASELINES.md`.

Persistence needs nothing; Lucas-Kanade extrapolation, S-PROG and STEPS need pySTEPS (a core
dependency, shared with `models.motion`), imported only when such a method runs. Every method has
the signature of `BaselineMethod` and returns `(M, n_leads, H, W)` float32 rain rate [mm h-1] with
NaN (pixels advected in from outside the grid) set to 0 mm/h.

pySTEPS settings (protocol): the methods work in dBR with a 0.1 mm/h threshold and -15 dBR for
no rain; motion is Lucas-Kanade on the 7 past dBR frames; S-PROG and STEPS use 6 cascade levels and
AR(2) on the last 3 frames; STEPS: nonparametric noise, bps velocity perturbation, cdf probability
matching, seed 42. S-PROG uses "mean" probability matching (BASELINES.md names cdf for STEPS only;
mean matching, as in pySTEPS' S-PROG example, is what reproduces its S-PROG rows exactly, cdf does
not). Forecasts go back to mm/h with values below -10 dBR (0.1 mm/h) set to 0.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Protocol

import numpy as np

from models.motion import (
    DBR_THRESHOLD_MM_H,
    from_dbr,
    lucas_kanade_dbr,
    pysteps_module,
    to_dbr,
)

CASCADE_LEVELS = 6
AR_ORDER = 2
STEPS_MEMBERS = 20
STEPS_SEED = 42
SPROG_PROBABILITY_MATCHING = "mean"


class BaselineMethod(Protocol):
    def __call__(
        self,
        past_mm_h: np.ndarray,
        n_leads: int,
        *,
        interval_s: int,
        pixel_size_km: float,
        members: int,
        seed: int,
    ) -> np.ndarray: ...


def persistence(
    past_mm_h: np.ndarray,
    n_leads: int,
    *,
    interval_s: int = 300,
    pixel_size_km: float = 1.0,
    members: int = 1,
    seed: int = STEPS_SEED,
) -> np.ndarray:
    """The last past frame repeated for every lead.

    past_mm_h (`(T, H, W)` float): rain rate [mm h-1], NaN = no coverage (becomes 0).
    Returns (`(1, n_leads, H, W)` float32) [mm h-1]. The keyword arguments are unused.
    """
    last = np.nan_to_num(np.asarray(past_mm_h[-1], dtype=np.float32), nan=0.0)
    return np.broadcast_to(last, (1, n_leads, *last.shape)).copy()


def extrapolation(
    past_mm_h: np.ndarray,
    n_leads: int,
    *,
    interval_s: int = 300,
    pixel_size_km: float = 1.0,
    members: int = 1,
    seed: int = STEPS_SEED,
) -> np.ndarray:
    """Semi-Lagrangian extrapolation of the last frame along the Lucas-Kanade motion.

    past_mm_h (`(T, H, W)` float): rain rate [mm h-1], oldest first. Returns
    (`(1, n_leads, H, W)` float32) [mm h-1]. The keyword arguments other than n_leads are unused.
    """
    pysteps = pysteps_module()
    past_dbr = to_dbr(past_mm_h)
    motion = lucas_kanade_dbr(past_dbr)
    nowcast = pysteps.nowcasts.get_method("extrapolation")  # type: ignore[attr-defined]
    forecast_dbr = nowcast(past_dbr[-1], motion, n_leads)
    return from_dbr(forecast_dbr)[None]


def sprog(
    past_mm_h: np.ndarray,
    n_leads: int,
    *,
    interval_s: int = 300,
    pixel_size_km: float = 1.0,
    members: int = 1,
    seed: int = STEPS_SEED,
) -> np.ndarray:
    """S-PROG (6 cascade levels, AR(2)) on Lucas-Kanade motion; same contract as `extrapolation`."""
    pysteps = pysteps_module()
    past_dbr = to_dbr(past_mm_h)
    motion = lucas_kanade_dbr(past_dbr)
    nowcast = pysteps.nowcasts.get_method("sprog")  # type: ignore[attr-defined]
    with contextlib.redirect_stdout(io.StringIO()):
        forecast_dbr = nowcast(
            past_dbr[-(AR_ORDER + 1) :],
            motion,
            n_leads,
            precip_thr=10.0 * np.log10(DBR_THRESHOLD_MM_H),
            n_cascade_levels=CASCADE_LEVELS,
            ar_order=AR_ORDER,
            probmatching_method=SPROG_PROBABILITY_MATCHING,
        )
    return from_dbr(forecast_dbr)[None]


def steps(
    past_mm_h: np.ndarray,
    n_leads: int,
    *,
    interval_s: int = 300,
    pixel_size_km: float = 1.0,
    members: int = STEPS_MEMBERS,
    seed: int = STEPS_SEED,
    num_workers: int = 1,
) -> np.ndarray:
    """STEPS ensemble on Lucas-Kanade motion (protocol settings, see the module docstring).

    past_mm_h (`(T, H, W)` float): rain rate [mm h-1], oldest first. interval_s and
    pixel_size_km scale the bps velocity perturbations. num_workers: pySTEPS' dask workers
    over members (speed comparisons give STEPS as many as the model has threads).
    Returns (`(members, n_leads, H, W)` float32) [mm h-1].
    """
    pysteps = pysteps_module()
    past_dbr = to_dbr(past_mm_h)
    motion = lucas_kanade_dbr(past_dbr)
    nowcast = pysteps.nowcasts.get_method("steps")  # type: ignore[attr-defined]
    with contextlib.redirect_stdout(io.StringIO()):
        forecast_dbr = nowcast(
            past_dbr[-(AR_ORDER + 1) :],
            motion,
            n_leads,
            n_ens_members=members,
            n_cascade_levels=CASCADE_LEVELS,
            precip_thr=10.0 * np.log10(DBR_THRESHOLD_MM_H),
            kmperpixel=pixel_size_km,
            timestep=interval_s / 60.0,
            noise_method="nonparametric",
            vel_pert_method="bps",
            probmatching_method="cdf",
            mask_method="incremental",
            ar_order=AR_ORDER,
            seed=seed,
            num_workers=num_workers,
        )
    return from_dbr(forecast_dbr)


BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "persistence": persistence,
    "extrapolation": extrapolation,
    "sprog": sprog,
    "steps": steps,
}


def get_method(name: str) -> Callable[..., np.ndarray]:
    """The baseline called `name`; an unknown name raises ValueError listing the valid ones."""
    try:
        return BASELINES[name]
    except KeyError:
        raise ValueError(f"unknown baseline {name!r}; choose one of {sorted(BASELINES)}") from None
