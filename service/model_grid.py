"""An agency's composite as it is -> the model's time steps and pixel size, and back.

The one place where an input's own interval and pixel size meet the model's (ARCHITECTURE.md,
"Grid handling ... in one place"). `service.radar_input` calls the planning functions while it
validates a file and collects their problems with its others; the worker feeds the model-grid
frames to the pipeline and brings the forecast back with `RadarInput.to_input_grid`. Padding to
the grid factor and tiling of large grids are the pipeline's (`models.pipeline`,
`models.tiling`): they depend on the model's networks, not on the file.

Time: the model's input times end at the last frame and step back by the model's interval. A
frame within 10 % of the input's interval of such a time is used as it is (1, 2.5 and 5 min
inputs of a 5 min model: every target is a frame; 2 min: every other one), any other target is
interpolated along the motion between its two neighbours (`models.interpolation`). Intervals
from 1 to 15 min are accepted, each step within 10 % of the median.

Space: the pixel size is read from the coordinates (projected metres, or degrees at the domain
centre). Within 25 % of the model's pixel it is used as it is; a grid finer by an integer factor
is block-averaged to the model's pixel (`models.regrid`), and the forecast is interpolated back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import xarray as xr

from models.config import ModelConfig

# a step may differ from the median step by this fraction (radar scans are not on the second)
TIME_JITTER_FRACTION = 0.10
MIN_INTERVAL_S = 60.0
MAX_INTERVAL_S = 900.0
# a pixel within this fraction of the model's is used as it is
PIXEL_TOLERANCE_FRACTION = 0.25
# at most this many fine pixels per model pixel and axis (a 125 m grid of a 1 km model)
MAX_BLOCK_FACTOR = 8
# the last frame needs at least this fraction of its pixels inside radar coverage
MIN_COVERAGE_FRACTION = 0.01
EARTH_RADIUS_M = 6_371_000.0


class GridProblem(ValueError):
    """One reason the input cannot be brought onto the model's grid: a code and a fix-it
    detail (`service.radar_input` turns it into a 422)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class TimePlan:
    """How the model's input frames come from the file's frames.

    input_interval_s: the file's median step [s]; targets (`(frames_in,)` datetime64[ns]): the
    model's input times, oldest first, ending at the last frame; sources: indices of the file's
    frames to read (sorted); tolerance_s: a frame this near a target is used as it is.
    """

    input_interval_s: float
    targets: np.ndarray
    sources: list[int]
    tolerance_s: float

    def description(self, interpolated: int, model_interval_s: int) -> str:
        if interpolated == 0:
            if math.isclose(self.input_interval_s, model_interval_s, rel_tol=0.01):
                return "none"
            return f"subsampled from {self.input_interval_s:g} s frames to {model_interval_s} s"
        return (
            f"{interpolated} of {self.targets.size} frames at {model_interval_s} s interpolated "
            f"from {self.input_interval_s:g} s frames along the Lucas-Kanade motion "
            "(pySTEPS) between their neighbours"
        )


def accepted_intervals(config: ModelConfig) -> str:
    interval = config.interval_s
    divisors = [d for d in range(60, interval + 1, 30) if interval % d == 0]
    return (
        f"any regular interval from {MIN_INTERVAL_S / 60:g} to {MAX_INTERVAL_S / 60:g} min "
        f"(each step within {TIME_JITTER_FRACTION:.0%} of the median); divisors of "
        f"{config.interval_s / 60:g} min ({', '.join(f'{d / 60:g}' for d in divisors)} min) are "
        "subsampled, others interpolated along the motion"
    )


def plan_times(times: np.ndarray, config: ModelConfig) -> TimePlan:
    """The model's input times and the file frames they come from.

    times (`(T,)` datetime64[ns]): the file's valid times, strictly increasing.
    Raises GridProblem for an irregular or unusable interval or too short a sequence.
    """
    seconds = (times - times[-1]).astype("timedelta64[ms]").astype(np.float64) / 1000.0
    if seconds.size < 2:
        raise GridProblem(
            "too-few-frames",
            f"the file has {seconds.size} frame; send at least "
            f"{(config.frames_in - 1) * config.interval_s / 60:g} min of frames",
        )
    steps = np.diff(seconds)
    interval = float(np.median(steps))
    off = np.abs(steps - interval) > TIME_JITTER_FRACTION * interval
    if off.any():
        i = int(np.flatnonzero(off)[0])
        listed = [str(t)[:19] for t in times]
        raise GridProblem(
            "irregular-times",
            f"time steps are irregular: most are {interval:g} s apart, but {listed[i]} to "
            f"{listed[i + 1]} is {steps[i]:g} s (more than {TIME_JITTER_FRACTION:.0%} off); send "
            "consecutive frames with none missing",
        )
    if (
        not MIN_INTERVAL_S * (1 - TIME_JITTER_FRACTION)
        <= interval
        <= MAX_INTERVAL_S * (1 + TIME_JITTER_FRACTION)
    ):
        raise GridProblem(
            "interval-mismatch",
            f"frames are {interval:g} s apart; model {config.name!r} takes "
            f"{accepted_intervals(config)}",
        )
    span = (config.frames_in - 1) * config.interval_s
    targets_s = -span + config.interval_s * np.arange(config.frames_in, dtype=np.float64)
    tolerance = TIME_JITTER_FRACTION * interval
    if seconds[0] > targets_s[0] + tolerance:
        raise GridProblem(
            "too-few-frames",
            f"the frames span {-seconds[0] / 60:g} min; model {config.name!r} needs "
            f"{span / 60:g} min of history ({config.frames_in} frames at "
            f"{config.interval_s / 60:g} min ending at the last frame): send a longer sequence",
        )
    from models.interpolation import source_frames

    sources = source_frames(seconds, targets_s, tolerance)
    targets = times[-1] + (targets_s * 1000).astype("timedelta64[ms]")
    return TimePlan(interval, targets.astype("datetime64[ns]"), sources, tolerance)


def pixel_sizes_m(grid: xr.Dataset, dims: tuple[str, str]) -> tuple[float, float]:
    """(row, column) pixel size [m] from the 1-D coordinates: projected metres (or km), or
    degrees converted at the domain centre (spherical Earth)."""
    sizes, degrees = [], []
    for dim in dims:
        coord = grid[dim]
        values = coord.values.astype(np.float64)
        step = float(np.median(np.abs(np.diff(values)))) if values.size > 1 else float("nan")
        units = str(coord.attrs.get("units", "")).strip().lower()
        standard_name = str(coord.attrs.get("standard_name", ""))
        is_degrees = units.startswith("degree") or standard_name in (
            "latitude",
            "longitude",
            "grid_latitude",
            "grid_longitude",
        )
        degrees.append(is_degrees)
        if is_degrees:
            sizes.append(math.radians(step) * EARTH_RADIUS_M)
        elif units in ("km", "kilometer", "kilometre", "kilometers", "kilometres"):
            sizes.append(step * 1000.0)
        else:
            sizes.append(step)  # metres: CF's unit of projection coordinates
    if all(degrees):
        # columns are longitudes: shorter by cos(latitude) at the domain centre
        latitude = float(np.mean(grid[dims[0]].values.astype(np.float64)))
        sizes[1] *= math.cos(math.radians(latitude))
    return sizes[0], sizes[1]


def block_factor(pixel_m: tuple[float, float], config: ModelConfig) -> tuple[int, int]:
    """(row, column) block size that brings pixels of `pixel_m` [m] to the model's pixel.

    Raises GridProblem when a side is neither the model's pixel (+-25 %) nor finer by an
    integer factor (within 25 % of the model's pixel after averaging).
    """
    model = config.pixel_size_m
    factors = []
    for size in pixel_m:
        factor = max(1, round(model / size)) if size > 0 and math.isfinite(size) else 0
        if (
            factor
            and factor <= MAX_BLOCK_FACTOR
            and abs(size * factor - model) <= (PIXEL_TOLERANCE_FRACTION * model)
        ):
            factors.append(factor)
            continue
        shown = " x ".join(f"{p:.4g} m" for p in pixel_m)
        raise GridProblem(
            "pixel-size-mismatch",
            f"the grid's pixels are {shown} (rows x columns, from the coordinates); model "
            f"{config.name!r} takes {model:g} m pixels (within {PIXEL_TOLERANCE_FRACTION:.0%}) "
            f"or pixels finer by a whole factor (e.g. {model / 2:g} m, {model / 4:g} m), which "
            f"are averaged to {model:g} m: regrid the composite to {model:g} m (e.g. with "
            "xarray's coarsen or interp), or check the coordinates' units",
        )
    return factors[0], factors[1]
