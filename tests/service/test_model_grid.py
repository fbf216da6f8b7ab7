"""Planning an input's interval and pixel size onto the model's (service.model_grid)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from models.config import SMALL
from service.model_grid import GridProblem, block_factor, pixel_sizes_m, plan_times

START = np.datetime64("2021-06-01T12:00:00", "ns")


def _times(seconds: list[float] | np.ndarray) -> np.ndarray:
    return START + (np.asarray(seconds) * 1e9).astype("timedelta64[ns]")


@pytest.mark.parametrize(
    ("interval_s", "frames", "interpolated"),
    [(60, 40, 0), (120, 20, 3), (150, 13, 0), (300, 7, 0), (360, 6, 5), (600, 4, 3), (900, 3, 4)],
)
def test_intervals_from_1_to_15_min_are_planned(
    interval_s: int, frames: int, interpolated: int
) -> None:
    times = _times(interval_s * np.arange(frames))
    plan = plan_times(times, SMALL)
    assert plan.targets[-1] == times[-1]
    assert (np.diff(plan.targets) == np.timedelta64(300, "s")).all()
    on_time = [
        np.min(np.abs(times - t)) <= np.timedelta64(int(plan.tolerance_s), "s")
        for t in plan.targets
    ]
    assert len(on_time) - sum(on_time) == interpolated
    assert plan.sources == sorted(set(plan.sources)) and plan.sources[-1] == frames - 1


def test_jitter_is_tolerated_but_gaps_and_other_intervals_are_not() -> None:
    jittered = 300 * np.arange(9) + np.array([0, 10, -12, 12, 0, -10, 8, 0, 4])
    assert plan_times(_times(jittered), SMALL).targets.size == SMALL.frames_in
    with pytest.raises(GridProblem, match="irregular"):
        plan_times(_times([0, 300, 600, 1200, 1500, 1800, 2100, 2400]), SMALL)
    with pytest.raises(GridProblem, match="from 1 to 15 min") as caught:
        plan_times(_times(1200 * np.arange(9)), SMALL)
    assert caught.value.code == "interval-mismatch"
    with pytest.raises(GridProblem, match="30 min of history") as caught:
        plan_times(_times(300 * np.arange(6)), SMALL)
    assert caught.value.code == "too-few-frames"


def _grid(rows: np.ndarray, cols: np.ndarray, names: tuple[str, str], units: str) -> xr.Dataset:
    return xr.Dataset(
        coords={
            n: (n, v, {"units": u})
            for n, v, u in zip(names, (rows, cols), (units[0], units[1]), strict=True)
        }
    )


def test_pixel_size_from_projected_and_lat_lon_coordinates() -> None:
    metres = _grid(np.arange(5) * 500.0, np.arange(5) * -500.0, ("y", "x"), ("m", "m"))
    assert pixel_sizes_m(metres, ("y", "x")) == (500.0, 500.0)
    km = _grid(np.arange(5) * 1.0, np.arange(5) * 1.0, ("y", "x"), ("km", "km"))
    assert pixel_sizes_m(km, ("y", "x")) == (1000.0, 1000.0)
    latlon = _grid(
        40 + 0.01 * np.arange(5),
        -100 + 0.01 * np.arange(5),
        ("lat", "lon"),
        ("degrees_north", "degrees_east"),
    )
    row_m, col_m = pixel_sizes_m(latlon, ("lat", "lon"))
    assert row_m == pytest.approx(1112, abs=1)
    assert col_m == pytest.approx(1112 * np.cos(np.radians(40.02)), abs=1)


@pytest.mark.parametrize(
    ("pixel_m", "factor"),
    [
        ((1000, 1000), (1, 1)),
        ((1112, 852), (1, 1)),
        ((500, 500), (2, 2)),
        ((250, 500), (4, 2)),
        ((333.3, 333.3), (3, 3)),
    ],
)
def test_model_and_finer_pixels_get_their_blocks(
    pixel_m: tuple[float, float], factor: tuple[int, int]
) -> None:
    assert block_factor(pixel_m, SMALL) == factor


@pytest.mark.parametrize("pixel_m", [(2000, 2000), (1000, 1300), (700, 700), (50, 50)])
def test_other_pixels_are_refused_with_what_to_do(pixel_m: tuple[float, float]) -> None:
    with pytest.raises(GridProblem, match="regrid the composite to 1000 m") as caught:
        block_factor(pixel_m, SMALL)
    assert caught.value.code == "pixel-size-mismatch"
