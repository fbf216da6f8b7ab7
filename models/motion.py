"""Motion fields from past radar frames: pySTEPS' dense Lucas-Kanade on dBR.

The motion-aware model and the extrapolation baselines share this estimate, with the settings of
`shared/BASELINES.md`: rain rates go to dBR (10 log10 R) with a 0.1 mm/h threshold and -15 dBR
for no rain, and Lucas-Kanade tracks features through all past frames. pySTEPS is the field's
reference implementation; it is a core dependency, imported when a motion field is needed.
"""

from __future__ import annotations

import contextlib
import io
from types import ModuleType

import numpy as np

DBR_THRESHOLD_MM_H = 0.1
DBR_ZERO_VALUE = -15.0


def pysteps_module() -> ModuleType:
    """`import pysteps` without its configuration banner on stdout."""
    with contextlib.redirect_stdout(io.StringIO()):
        import pysteps
    return pysteps


def to_dbr(rain_mm_h: np.ndarray) -> np.ndarray:
    """Rain rate `(..., H, W)` [mm h-1] (NaN = no coverage, read as no rain) -> dBR float64."""
    pysteps_module()
    from pysteps.utils.transformation import dB_transform

    rain = np.nan_to_num(np.asarray(rain_mm_h, dtype=np.float64), nan=0.0)
    dbr, _ = dB_transform(rain, threshold=DBR_THRESHOLD_MM_H, zerovalue=DBR_ZERO_VALUE)
    return dbr


def from_dbr(dbr: np.ndarray) -> np.ndarray:
    """dBR -> rain rate float32 [mm h-1]; below 0.1 mm/h and NaN become 0."""
    from pysteps.utils.transformation import dB_transform

    threshold_dbr = 10.0 * np.log10(DBR_THRESHOLD_MM_H)
    rain, _ = dB_transform(dbr, threshold=threshold_dbr, inverse=True)
    return np.nan_to_num(rain, nan=0.0).astype(np.float32)


def lucas_kanade_dbr(past_dbr: np.ndarray) -> np.ndarray:
    """Advection field `(2, H, W)` (x then y component, pixels per frame) from dBR frames.

    past_dbr (`(T, H, W)` float, T >= 2): rain rate in dBR, oldest first.
    """
    return pysteps_module().motion.get_method("LK")(past_dbr)


def lucas_kanade(past_mm_h: np.ndarray) -> np.ndarray:
    """Advection field `(2, H, W)` float32 [px per frame] from rain rates `(T, H, W)` [mm h-1].

    Without any trackable rain (a dry or uniform input) the field is zero.
    """
    past = np.asarray(past_mm_h)
    if past.ndim != 3 or past.shape[0] < 2:
        raise ValueError(f"past_mm_h must be (T >= 2, H, W), got shape {past.shape}")
    motion = lucas_kanade_dbr(to_dbr(past))
    return np.nan_to_num(motion, nan=0.0).astype(np.float32)
