"""Radar frames onto the model's time steps: picked where a frame is on time, otherwise
motion-compensated interpolation between the two neighbouring frames.

Linear blending of two rain fields smears a moving cell into two half-intensity ghosts. Here the
motion between the neighbours is estimated with pySTEPS' Lucas-Kanade (`models.motion`); the
earlier frame is advected forward by the fraction `a` of the gap and the later one backward by
`1 - a` (semi-Lagrangian, `models.extrapolation.advect`), and the two are blended with weights
`1 - a` and `a`: a cell is where it should be at the target time, and each neighbour counts as
much as it is near in time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.extrapolation import advect
from models.motion import lucas_kanade


@dataclass(frozen=True)
class Resampled:
    """Frames at the target times.

    rain_mm_h (`(T', H, W)` float32): rain rate [mm h-1], NaN where no source frame had coverage.
    interpolated (`(T',)` bool): True where the frame was interpolated, False where picked.
    """

    rain_mm_h: np.ndarray
    interpolated: np.ndarray


def source_frames(times_s: np.ndarray, targets_s: np.ndarray, tolerance_s: float) -> list[int]:
    """Indices of the frames `resample_frames` reads for these targets (sorted, unique).

    times_s (`(T,)` float, increasing) and targets_s (`(T',)`) in seconds; every target must lie
    within [times_s[0] - tolerance_s, times_s[-1] + tolerance_s].
    """
    needed: set[int] = set()
    for target in np.asarray(targets_s, dtype=np.float64):
        nearest, before = _neighbours(times_s, target, tolerance_s)
        needed |= {nearest} if before is None else {before, before + 1}
    return sorted(needed)


def resample_frames(
    rain_mm_h: np.ndarray, times_s: np.ndarray, targets_s: np.ndarray, tolerance_s: float
) -> Resampled:
    """Frames at `targets_s` from frames at `times_s`.

    Parameters
    ----------
    rain_mm_h (`(T, H, W)` float): rain rate [mm h-1], oldest first, NaN = no coverage.
    times_s (`(T,)` float): their valid times [s], strictly increasing.
    targets_s (`(T',)` float): the wanted valid times [s], inside the span of `times_s`.
    tolerance_s: a frame within this of a target is used as it is (timing jitter).

    Returns
    -------
    Resampled: `(T', H, W)` float32 frames [mm h-1] and which of them were interpolated.
    """
    rain = np.asarray(rain_mm_h, dtype=np.float32)
    times = np.asarray(times_s, dtype=np.float64)
    if rain.ndim != 3 or rain.shape[0] != times.shape[0]:
        raise ValueError(f"rain_mm_h {rain.shape} does not match {times.shape[0]} times")
    frames, interpolated = [], []
    motions: dict[int, np.ndarray] = {}
    for target in np.asarray(targets_s, dtype=np.float64):
        nearest, before = _neighbours(times, target, tolerance_s)
        if before is None:
            frames.append(rain[nearest])
            interpolated.append(False)
            continue
        after = before + 1
        if before not in motions:  # one motion field per pair of neighbours
            motions[before] = lucas_kanade(rain[[before, after]])
        a = float((target - times[before]) / (times[after] - times[before]))
        forward = advect(rain[before], a * motions[before], 1).rain_mm_h[0]
        backward = advect(rain[after], -(1.0 - a) * motions[before], 1).rain_mm_h[0]
        blend = (1.0 - a) * forward + a * backward
        # no coverage in either neighbour: still no coverage
        blend[np.isnan(rain[before]) & np.isnan(rain[after])] = np.nan
        frames.append(blend.astype(np.float32))
        interpolated.append(True)
    return Resampled(np.stack(frames), np.array(interpolated, dtype=bool))


def _neighbours(times: np.ndarray, target: float, tolerance_s: float) -> tuple[int, int | None]:
    """(index of the nearest frame, None) when it is on time, else (nearest, index of the frame
    just before the target)."""
    nearest = int(np.argmin(np.abs(times - target)))
    if abs(times[nearest] - target) <= tolerance_s:
        return nearest, None
    before = int(np.searchsorted(times, target, side="right")) - 1
    if before < 0 or before + 1 >= times.size:
        raise ValueError(f"target time {target} s lies outside the frames' span")
    return nearest, before
