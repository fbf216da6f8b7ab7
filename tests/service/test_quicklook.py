"""Quick-look frames and PNGs from forecast files: the service's own writer and other layouts.

The files are written by the service's real writer (`write_forecast_netcdf`) from the 64 px test
radar; the other layouts (older variable names, IMPROVER-style probabilities with SI thresholds,
a file without mean and probabilities) are made from that file with xarray, so the quick-look
keeps finding its products while the forecast format changes.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import xarray as xr
from matplotlib.image import imread

from models.config import TINY
from service.forecast_output import write_forecast_netcdf
from service.netcdf_io import read_radar_netcdf
from service.quicklook import QuicklookError, quicklook_png, read_quicklook_frames
from service.radar_input import NETCDF_LIBRARY_LOCK
from tests.support.cluster import RADAR_64

MEMBERS = 5
THRESHOLDS_MM_H = (0.1, 1.0, 5.0)
LEADS = tuple(f"+{5 * (i + 1)} min" for i in range(TINY.frames_out))
# stored rain rates are rounded to multiples of 1/128 mm h-1
QUANTUM_MM_H = 1 / 128


@pytest.fixture(scope="module")
def forecast() -> np.ndarray:
    """`(M, T, H, W)` rain-like forecast [mm h-1]: gamma-distributed, 40 % wet."""
    rng = np.random.default_rng(3)
    shape = (MEMBERS, TINY.frames_out, 64, 64)
    rain = rng.gamma(0.6, 3.0, size=shape)
    return np.where(rng.random(shape) < 0.4, rain, 0.0).astype(np.float32)


@pytest.fixture(scope="module")
def written(forecast: np.ndarray) -> bytes:
    radar = read_radar_netcdf(RADAR_64.read_bytes(), TINY)
    return write_forecast_netcdf(
        forecast,
        radar,
        interval_s=TINY.interval_s,
        thresholds_mm_h=THRESHOLDS_MM_H,
        products=("members", "mean", "exceedance"),
        attrs={},
    )


def _open(data: bytes, tmp_path) -> xr.Dataset:
    path = tmp_path / "forecast.nc"
    path.write_bytes(data)
    with NETCDF_LIBRARY_LOCK, xr.open_dataset(path, decode_timedelta=True) as ds:
        return ds.load()


def _to_bytes(ds: xr.Dataset) -> bytes:
    with NETCDF_LIBRARY_LOCK:
        return bytes(ds.to_netcdf(engine="netcdf4", format="NETCDF4"))


def test_frames_are_the_stored_products(written: bytes, forecast: np.ndarray) -> None:
    mean = read_quicklook_frames(written, "mean")
    member = read_quicklook_frames(written, "member", member=2)
    probability = read_quicklook_frames(written, "probability")

    covered = ~np.isnan(mean.values)  # the file masks the input's pixels without coverage
    assert 0.5 < covered.mean() < 1.0  # the fixture has pixels without coverage, as NaN
    np.testing.assert_allclose(
        mean.values[covered], forecast.mean(axis=0)[covered], atol=QUANTUM_MM_H
    )
    np.testing.assert_allclose(member.values[covered], forecast[2][covered], atol=QUANTUM_MM_H)
    # default threshold: the lowest at or above 1 mm h-1; members rounded for storage may move
    # across it, so a few pixels may differ by one member's share
    expected = (forecast > 1.0).mean(axis=0)
    difference = np.abs(probability.values[covered] - expected[covered])
    assert difference.max() <= 1 / MEMBERS + 1e-6
    assert (difference > 1e-6).mean() < 0.02
    assert probability.title == "probability of rain rate > 1 mm h-1"
    assert member.title == "member 2"
    for frames in (mean, member, probability):
        assert frames.values.shape == (TINY.frames_out, 64, 64)
        assert frames.lead_labels == LEADS
        assert frames.origin_lower is False  # the fixture's y decreases down the rows


def _probability_name(ds: xr.Dataset) -> str:
    (name,) = [n for n, v in ds.data_vars.items() if v.ndim == 4 and "realization" not in v.dims]
    return str(name)


def _mean_name(ds: xr.Dataset) -> str:
    (name,) = [n for n, v in ds.data_vars.items() if v.ndim == 3 and "time" in v.dims]
    return str(name)


def _legacy(ds: xr.Dataset) -> xr.Dataset:
    """The first release's names: `precip_mean` (no cell_methods), `exceedance_probability`."""
    names = {_mean_name(ds): "precip_mean", _probability_name(ds): "exceedance_probability"}
    ds = ds.rename({old: new for old, new in names.items() if old != new})
    ds["precip_mean"].attrs.pop("cell_methods", None)
    ds["precip_mean"].attrs["long_name"] = "precipitation rate, ensemble mean"
    return ds


def _improver(ds: xr.Dataset) -> xr.Dataset:
    """IMPROVER style: thresholds in m s-1 with a relation, the mean known by cell_methods."""
    probability = _probability_name(ds)
    threshold_dim = ds[probability].dims[0]
    ds = ds.rename({_mean_name(ds): "rain_rate_blend", probability: "p_above"})
    ds["rain_rate_blend"].attrs = {"units": "mm h-1", "cell_methods": "realization: mean"}
    ds["p_above"].attrs = {
        "standard_name": "probability_of_lwe_precipitation_rate_above_threshold",
        "units": "1",
    }
    si = ds[threshold_dim].values.astype(np.float64) / 3.6e6
    ds = ds.assign_coords(
        {
            threshold_dim: (
                threshold_dim,
                si,
                {"units": "m s-1", "spp__relative_to_threshold": "greater_than_or_equal_to"},
            )
        }
    )
    return ds


@pytest.mark.parametrize(
    ("layout", "relation"), [(_legacy, ">"), (_improver, "≥")], ids=["legacy", "improver"]
)
def test_products_are_found_by_what_they_are(written: bytes, tmp_path, layout, relation) -> None:
    data = _to_bytes(layout(_open(written, tmp_path)))
    for product in ("mean", "member", "probability"):
        original = read_quicklook_frames(written, product, threshold_mm_h=5.0)
        found = read_quicklook_frames(data, product, threshold_mm_h=5.0)
        np.testing.assert_array_equal(found.values, original.values)
        assert found.lead_labels == LEADS
    title = read_quicklook_frames(data, "probability", threshold_mm_h=5.0).title
    assert title == f"probability of rain rate {relation} 5 mm h-1"


def test_members_only_file_gives_mean_of_members_and_no_probability(
    written: bytes, tmp_path
) -> None:
    ds = _open(written, tmp_path)
    members_only = _to_bytes(ds.drop_vars([_mean_name(ds), _probability_name(ds)]))
    mean = read_quicklook_frames(members_only, "mean")
    stored_mean = read_quicklook_frames(written, "mean")
    # the stored mean is rounded for storage; the one made from rounded members is not
    np.testing.assert_allclose(mean.values, stored_mean.values, atol=QUANTUM_MM_H, equal_nan=True)
    assert mean.title == f"ensemble mean of {MEMBERS} members"
    with pytest.raises(QuicklookError) as missing:
        read_quicklook_frames(members_only, "probability")
    assert (missing.value.status, missing.value.code) == (404, "product-not-in-forecast")


def test_member_and_threshold_outside_the_forecast_are_422(written: bytes) -> None:
    with pytest.raises(QuicklookError) as member:
        read_quicklook_frames(written, "member", member=MEMBERS)
    assert (member.value.status, member.value.code) == (422, "member-out-of-range")
    assert f"0-{MEMBERS - 1}" in member.value.detail
    with pytest.raises(QuicklookError) as threshold:
        read_quicklook_frames(written, "probability", threshold_mm_h=3.0)
    assert (threshold.value.status, threshold.value.code) == (422, "threshold-not-in-forecast")
    assert "0.1, 1, 5 mm h-1" in threshold.value.detail


@pytest.mark.parametrize("product", ["mean", "probability"])
def test_png_is_a_frame_strip(written: bytes, product: str) -> None:
    png = quicklook_png(written, product)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    pixels = imread(io.BytesIO(png), format="png")
    height, width = pixels.shape[:2]
    # six 120-px frames side by side on one row, and a colour bar
    assert width > 6 * 120 and 120 < height < width / 3
    assert np.unique(pixels.reshape(-1, pixels.shape[2]), axis=0).shape[0] > 20  # not blank
