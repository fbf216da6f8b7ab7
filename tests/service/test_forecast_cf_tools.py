"""The forecast file in the tools a forecaster already has: IOOS compliance-checker, cf_xarray,
Iris, NCO, and recomputing the probabilities from the stored members (issue 12, item 1).

`test_netcdf_io.py` checks the file's layout and cfchecks; these check that CF-aware tools find
each product by its CF name and can work on the file as it is downloaded.
"""

from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from models.config import TINY
from service.netcdf_io import (
    MEAN_VARIABLE,
    MEMBERS_VARIABLE,
    PERCENTILE_VARIABLE,
    PROBABILITY_VARIABLE,
    RadarInput,
    read_radar_netcdf,
    write_forecast_netcdf,
)
from tests.service.broken_netcdf import to_bytes, valid_bytes, valid_dataset

DATA = Path(__file__).resolve().parents[1] / "data"
LATLON_FIXTURE = DATA / "mrms_20190610_64.nc"
RAIN_RATE = "lwe_precipitation_rate"
EVERY_PRODUCT = ("members", "mean", "exceedance", "percentiles")
THRESHOLDS_MM_H = (0.1, 1.0, 5.0, 10.0)
# compliance-checker 6.1's Appendix F table asks oblique_mercator for "azimuth"; CF 1.8 names
# that parameter azimuth_of_central_line, which the MeteoSwiss grid mapping has
CHECKER_OBLIQUE_MERCATOR_FALSE_POSITIVE = (
    "azimuth is a required attribute for grid mapping oblique_mercator"
)


def _forecast(radar: RadarInput, members: int, leads: int, seed: int) -> np.ndarray:
    """A rain-like `(M, T, H, W)` forecast [mm h-1], with values just around the thresholds so
    that rounding for storage would flip some exceedances if done after the probabilities."""
    rng = np.random.default_rng(seed)
    height, width = radar.rain_mm_h.shape[1:]
    rain = rng.gamma(0.6, 3.0, size=(members, leads, height, width))
    near = rng.choice(THRESHOLDS_MM_H, size=rain.shape) + rng.uniform(-0.004, 0.004, rain.shape)
    rain = np.where(rng.random(rain.shape) < 0.3, near, rain)
    return np.where(rng.random(rain.shape) < 0.6, rain, 0.0).astype(np.float32)


def _write(radar: RadarInput, interval_s: int, path: Path, seed: int = 3) -> Path:
    data = write_forecast_netcdf(
        _forecast(radar, members=6, leads=4, seed=seed),
        radar,
        interval_s=interval_s,
        thresholds_mm_h=THRESHOLDS_MM_H,
        products=EVERY_PRODUCT,
        percentiles=(10, 50, 90),
        attrs={"model_name": "tiny", "model_version": "0.1.0", "job_id": "j", "seed": 7},
    )
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def projected(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every product on the MeteoSwiss grid (oblique_mercator), from rain-rate input."""
    radar = read_radar_netcdf(valid_bytes(), TINY)
    return _write(radar, TINY.interval_s, tmp_path_factory.mktemp("cf") / "projected.nc")


@pytest.fixture(scope="module")
def latlon(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every product on the MRMS lat/lon grid."""
    config = TINY.replace(interval_s=120)
    radar = read_radar_netcdf(LATLON_FIXTURE.read_bytes(), config)
    return _write(radar, 120, tmp_path_factory.mktemp("cf") / "latlon.nc")


def _compliance_findings(path: Path) -> dict[str, list[str]]:
    """IOOS compliance-checker's CF-1.8 findings: messages of failed checks by severity."""
    runner = pytest.importorskip("compliance_checker.runner")
    from compliance_checker.base import BaseCheck

    suite = runner.CheckSuite()
    suite.load_all_available_checkers()
    results, errors = suite.run_all(suite.load_dataset(str(path)), ["cf:1.8"], skip_checks=[])[
        "cf:1.8"
    ]
    assert not errors, errors  # a check that crashed
    findings: dict[str, list[str]] = {"error": [], "warning": []}
    for result in results:
        value = result.value
        failed = value[0] < value[1] if isinstance(value, tuple) else not value
        if failed:
            severity = "error" if result.weight == BaseCheck.HIGH else "warning"
            findings[severity].extend(result.msgs)
    return findings


def test_compliance_checker_finds_no_errors_with_every_product(latlon: Path, projected: Path):
    findings = _compliance_findings(latlon)
    assert findings["error"] == [], findings
    # the projected file: only the checker's own oblique_mercator mistake (see the constant)
    assert _compliance_findings(projected)["error"] == [CHECKER_OBLIQUE_MERCATOR_FALSE_POSITIVE]


def test_cf_xarray_finds_one_rain_rate_and_the_probabilities(projected: Path) -> None:
    pytest.importorskip("cf_xarray")
    with xr.open_dataset(projected) as ds:
        assert ds.cf.standard_names[RAIN_RATE] == [MEMBERS_VARIABLE]
        rain = ds.cf[RAIN_RATE]  # raised "multiple variables" when the statistics shared it
        assert rain.name == MEMBERS_VARIABLE and rain.dims[0] == "realization"
        probability = ds.cf[PROBABILITY_VARIABLE]
        assert probability.dims == ("threshold", "time", "y", "x")
        assert rain.attrs["ancillary_variables"] == PROBABILITY_VARIABLE
        assert ds[MEAN_VARIABLE].attrs["cell_methods"] == "realization: mean"


def test_iris_loads_one_rain_rate_cube_and_the_probability_cube(projected: Path) -> None:
    iris = pytest.importorskip("iris")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Iris warns about attributes it does not interpret
        cubes = iris.load(str(projected))
    assert len(cubes.extract(RAIN_RATE)) == 1
    members = cubes.extract_cube(RAIN_RATE)
    assert members.coord("realization").shape == (6,)
    assert str(members.units) == "mm h-1"
    probability = cubes.extract_cube(PROBABILITY_VARIABLE)
    threshold = probability.coord(var_name="threshold")
    assert threshold.attributes["spp__relative_to_threshold"] == "greater_than"
    assert str(threshold.units) == "mm h-1"
    np.testing.assert_allclose(threshold.points, THRESHOLDS_MM_H)
    mean = cubes.extract_cube("precipitation rate, ensemble mean")
    assert [(m.method, m.coord_names) for m in mean.cell_methods] == [("mean", ("realization",))]
    # every cube has a distinct name: no three cubes called lwe_precipitation_rate
    assert len({cube.name() for cube in cubes}) == len(cubes) == 4


def test_ncatted_edits_the_downloaded_file_in_place(projected: Path, tmp_path: Path) -> None:
    if shutil.which("ncatted") is None:
        pytest.skip("NCO's ncatted is not installed (Debian package nco; .ci/run installs it)")
    path = tmp_path / "forecast.nc"
    shutil.copyfile(projected, path)
    # failed with NC_ECANTWRITE while the file was written in memory by netCDF-C
    subprocess.run(
        ["ncatted", "-O", "-h", "-a", "comment,global,o,c,checked by the duty forecaster", path],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["ncatted", "-O", "-h", "-a", f"long_name,{MEMBERS_VARIABLE},o,c,member rain", path],
        check=True,
        capture_output=True,
    )
    with xr.open_dataset(path) as ds:
        assert ds.attrs["comment"] == "checked by the duty forecaster"
        assert ds[MEMBERS_VARIABLE].attrs["long_name"] == "member rain"


def test_probabilities_recomputed_from_stored_members_are_the_stored_ones(
    projected: Path,
) -> None:
    with xr.open_dataset(projected) as ds:
        members = ds[MEMBERS_VARIABLE].values  # float32, NaN = no coverage
        thresholds = ds["threshold"].values
        stored = ds[PROBABILITY_VARIABLE].values
        percentiles = ds[PERCENTILE_VARIABLE].values
    covered = ~np.isnan(members[0, 0])
    near = np.isclose(members[..., covered], thresholds[:, None, None, None], atol=0.004)
    assert near.any(axis=(1, 2, 3)).all()  # values near every threshold: rounding matters
    for k, threshold in enumerate(thresholds):
        recomputed = (members[..., covered] > threshold).mean(axis=0)
        np.testing.assert_array_equal(stored[k][..., covered], recomputed.astype(np.float32))
    assert np.isnan(stored[..., ~covered]).all()
    # percentiles are of the stored members too (within the storage rounding)
    expected = np.percentile(members[..., covered], [10, 50, 90], axis=0)
    np.testing.assert_allclose(percentiles[..., covered], expected, atol=1 / 256)


def test_input_conversion_and_zr_relation_are_recorded(tmp_path: Path) -> None:
    rain = read_radar_netcdf(valid_bytes(), TINY)
    _write(rain, TINY.interval_s, tmp_path / "rain.nc")
    with xr.open_dataset(tmp_path / "rain.nc") as ds:
        assert ds.attrs["input_converted_from_dbz"] == "false"
        assert ds.attrs["input_variable"] == "precip" and ds.attrs["input_units"] == "mm h-1"
        assert "no Z-R relation" in ds.attrs["input_conversion"]
        assert "zr_a" not in ds.attrs

    reflectivity = valid_dataset()
    rate = reflectivity["precip"]
    dbz = 10 * np.log10(300.0 * np.maximum(rate.values, 0.01) ** 1.5)  # NaN stays NaN
    reflectivity["precip"] = (
        rate.dims,
        dbz.astype(np.float32),
        {"standard_name": "equivalent_reflectivity_factor", "units": "dBZ", "grid_mapping": "crs"},
    )
    data = to_bytes(reflectivity, keep_encoding=False)
    radar = read_radar_netcdf(data, TINY, zr_a=300.0, zr_b=1.5)
    _write(radar, TINY.interval_s, tmp_path / "dbz.nc")
    with xr.open_dataset(tmp_path / "dbz.nc") as ds:
        assert ds.attrs["input_converted_from_dbz"] == "true"
        assert ds.attrs["input_units"] == "dBZ"
        assert (ds.attrs["zr_a"], ds.attrs["zr_b"]) == (300.0, 1.5)
        assert ds.attrs["zr_relation"] == "Z = 300 R^1.5"
        assert "a = 300, b = 1.5" in ds.attrs["input_conversion"]
