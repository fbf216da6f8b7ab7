"""Semi-Lagrangian extrapolation of the last radar frame along a motion field (pySTEPS).

The motion-aware model is conditioned on this forecast and diffuses its residual: advection, which
a handful of training events cannot teach a diffusion model, comes from here. It is also the
`extrapolation` baseline of `shared/BASELINES.md`, in the same dBR space.

Inflow boundary: pixels whose back-trajectory leaves the grid have no upstream information;
pySTEPS marks them NaN (the baseline scores them as 0 mm/h). Here they take the last frame's
value at the same pixel (Eulerian persistence): rain fields are spatially correlated, so near the
edge the field just upstream is most like the field at the edge, and a dry fill would carve a
dry band into every wet inflow edge that the diffusion model must then repaint. The mask of
those pixels is returned as well.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.motion import from_dbr, lucas_kanade, pysteps_module, to_dbr


@dataclass(frozen=True)
class Extrapolation:
    """An extrapolation nowcast.

    rain_mm_h (`(n_leads, H, W)` float32): rain rate [mm h-1], no NaN.
    inflow (`(n_leads, H, W)` bool): True where the pixel was advected in from outside the grid
        (filled by persistence of the last frame).
    motion (`(2, H, W)` float32): the advection field, x then y [px per frame].
    """

    rain_mm_h: np.ndarray
    inflow: np.ndarray
    motion: np.ndarray


def advect(last_mm_h: np.ndarray, motion: np.ndarray, n_leads: int) -> Extrapolation:
    """Advect `last_mm_h` (`(H, W)` [mm h-1], NaN = no coverage, read as 0) for `n_leads` frames.

    motion (`(2, H, W)` float): x and y displacement [px per frame]. Advection is in dBR, as the
    pySTEPS baseline, with the inflow boundary filled as the module docstring says.
    """
    if n_leads < 1:
        raise ValueError(f"n_leads must be >= 1, got {n_leads}")
    last = np.nan_to_num(np.asarray(last_mm_h, dtype=np.float32), nan=0.0)
    semilagrangian = pysteps_module().extrapolation.get_method("semilagrangian")
    forecast_dbr = semilagrangian(to_dbr(last), motion, n_leads, outval=np.nan)
    inflow = np.isnan(forecast_dbr)
    rain = from_dbr(forecast_dbr)
    rain = np.where(inflow, last[None], rain).astype(np.float32)
    return Extrapolation(rain, inflow, np.asarray(motion, dtype=np.float32))


def extrapolate(past_mm_h: np.ndarray, n_leads: int) -> Extrapolation:
    """Lucas-Kanade motion from `past_mm_h` (`(T, H, W)` [mm h-1], oldest first, NaN = no
    coverage) and semi-Lagrangian advection of its last frame over `n_leads` frames."""
    past = np.asarray(past_mm_h, dtype=np.float32)
    return advect(past[-1], lucas_kanade(past), n_leads)
