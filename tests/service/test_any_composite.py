"""Composites as agencies post them: any size, projected or lat/lon, fine or model pixels,
1-10 min intervals; the forecast comes back on the input's own grid (the worker's path:
read -> model grid -> pipeline -> input grid -> NetCDF)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from models.config import TINY
from models.pipeline import NowcastPipeline
from service.netcdf_io import RadarInputError, read_radar_netcdf, write_forecast_netcdf
from tests.service.broken_netcdf import to_bytes

DATA = Path(__file__).resolve().parents[1] / "data"


def _projected() -> xr.Dataset:
    """MeteoSwiss 64 x 64 px at 1 km, 9 frames at 5 min."""
    return xr.load_dataset(DATA / "mch_20150515_64.nc")


def _latlon() -> xr.Dataset:
    """MRMS 64 x 64 px at 0.01 deg (~1.1 x 0.85 km), 9 frames at 2 min."""
    return xr.load_dataset(DATA / "mrms_20190610_64.nc")


def _with_interval(ds: xr.Dataset, interval_s: int, frames: int) -> xr.Dataset:
    """`frames` frames (the fixture's, repeated) relabelled `interval_s` apart."""
    index = np.arange(frames) % ds.sizes["time"]
    out = ds.isel(time=index)
    times = ds["time"].values[0] + (interval_s * np.arange(frames)).astype("timedelta64[s]")
    out = out.assign_coords(time=times)
    out["time"].attrs = ds["time"].attrs
    return out


def _finer(ds: xr.Dataset, factor: int) -> xr.Dataset:
    """The same rain on pixels `factor` times finer (each cell repeated)."""

    def centres(values: np.ndarray) -> np.ndarray:
        step = (values[1] - values[0]) / factor
        offsets = (np.arange(factor) - (factor - 1) / 2) * step
        return (values[:, None] + offsets[None, :]).ravel()

    out = ds.isel(
        y=np.repeat(np.arange(ds.sizes["y"]), factor),
        x=np.repeat(np.arange(ds.sizes["x"]), factor),
    )
    out = out.assign_coords(y=centres(ds["y"].values), x=centres(ds["x"].values))
    for name in ("x", "y"):
        out[name].attrs = ds[name].attrs
    return out


CASES: dict[str, tuple[Callable[[], xr.Dataset], tuple[int, int], str]] = {
    # name: (make, expected block, words of the time attribute)
    "projected 1 km 5 min, odd size": (
        lambda: _projected().isel(y=slice(0, 61), x=slice(3, 60)),
        (1, 1),
        "none",
    ),
    "projected 500 m 5 min, odd size": (
        lambda: _finer(_projected(), 2).isel(y=slice(0, 101), x=slice(0, 90)),
        (2, 2),
        "none",
    ),
    "projected 1 km 6 min": (lambda: _with_interval(_projected(), 360, 9), (1, 1), "interpolated"),
    "projected 1 km 1 min": (lambda: _with_interval(_projected(), 60, 31), (1, 1), "subsampled"),
    "lat/lon 0.01 deg 2 min": (lambda: _with_interval(_latlon(), 120, 16), (1, 1), "interpolated"),
}


@pytest.fixture(scope="module")
def pipeline(tiny_model_dir: Path) -> NowcastPipeline:
    return NowcastPipeline.from_model_dir(tiny_model_dir)


@pytest.mark.parametrize("name", sorted(CASES))
def test_composite_is_forecast_on_its_own_grid(name: str, pipeline: NowcastPipeline) -> None:
    make, block, time_words = CASES[name]
    ds = make()
    row, col = ds["precip"].dims[1:]
    ds["precip"][-1, :7, :9] = np.nan  # no coverage in a corner: missing in the output too
    radar = read_radar_netcdf(to_bytes(ds, keep_encoding=False), pipeline.config)
    assert radar.block == block and time_words in radar.time_resampling
    assert radar.rain_mm_h.shape == (TINY.frames_in, ds.sizes[row], ds.sizes[col])

    forecast = pipeline.forecast(radar.model_rain_mm_h, members=1, steps=1, seed=0)
    data = write_forecast_netcdf(
        radar.to_input_grid(forecast),
        radar,
        interval_s=pipeline.config.interval_s,
        attrs={"model_name": "tiny", **radar.processing_attrs},
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "forecast.nc"
        path.write_bytes(data)
        with xr.open_dataset(path) as out:
            np.testing.assert_array_equal(out[row].values, ds[row].values)
            np.testing.assert_array_equal(out[col].values, ds[col].values)
            assert out["precip"].shape[-2:] == (ds.sizes[row], ds.sizes[col])
            mapping = ds["precip"].attrs.get("grid_mapping")
            if mapping:
                assert out[mapping].attrs["crs_wkt"] == ds[mapping].attrs["crs_wkt"]
            assert out["time"].values[0] - ds["time"].values[-1] == np.timedelta64(300, "s")
            assert (np.diff(out["time"].values) == np.timedelta64(300, "s")).all()
            assert time_words in out.attrs["input_time_resampling"]
            assert out.attrs["input_regridding"].startswith("none" if block == (1, 1) else "block")
            # missing exactly where the last input frame has no coverage
            no_coverage = np.isnan(ds["precip"].values[-1])
            assert no_coverage[:7, :9].all()
            missing = np.isnan(out["precip"].values)
            assert (missing == no_coverage).all()


def test_every_problem_of_a_composite_in_one_error() -> None:
    ds = _with_interval(_projected(), 1200, 9)  # 20 min: not usable
    ds = ds.assign_coords(x=ds["x"] * 3, y=ds["y"] * 3)  # 3 km pixels: not usable
    for name in ("x", "y"):
        ds[name].attrs = _projected()[name].attrs
    ds["precip"].values[-1] = np.nan  # no coverage in the last frame
    with pytest.raises(RadarInputError) as caught:
        read_radar_netcdf(to_bytes(ds, keep_encoding=False), TINY)
    error = caught.value
    assert error.status == 422 and error.code == "several-problems"
    assert [p.code for p in error.problems] == [
        "interval-mismatch",
        "pixel-size-mismatch",
        "no-coverage",
    ]
    assert error.detail.startswith("3 problems: (1) interval-mismatch")
