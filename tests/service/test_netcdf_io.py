"""NetCDF in and out: input validation on real and broken files, the forecast file round trip."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from models.config import TINY
from models.units import dbz_to_mm_h
from service.forecast_output import Compression
from service.netcdf_io import PROBABILITY_VARIABLE as PROBABILITY
from service.netcdf_io import (
    RadarInput,
    RadarInputError,
    read_radar_netcdf,
    write_forecast_netcdf,
)
from tests.service import broken_netcdf
from tests.service.broken_netcdf import BROKEN_CASES, to_bytes, valid_bytes, valid_dataset

DATA = Path(__file__).resolve().parents[1] / "data"
REPO = Path(__file__).resolve().parents[2]
SHARED_RADAR = REPO.parent / "shared" / "data" / "radar"
LATLON_FIXTURE = DATA / "mrms_20190610_64.nc"
CF_TABLES = DATA / "cf"
CF_REALIZATION_BOUNDS_WARNING = (
    "(7.3): Coordinate variable realization should have bounds or climatology attribute"
)
QUANTUM_MM_H = (
    1 / 128
)  # storage step of rain rates in the forecast file (least_significant_digit 2)
JOB_ATTRS = {
    "model_name": "tiny",
    "model_version": "0.1.0",
    "weights_sha256": "9f2c" * 16,
    "job_id": "3f6c1e0a-job",
    "steps": 5,
    "seed": 1234,
    "constraint": {"type": "mean_intensity", "target_mm_h": 8.0, "strength": 1.0},
}


def _fixture_frames(path: Path, frames: int) -> xr.Dataset:
    """The last `frames` frames as xarray decodes them, read independently of the reader."""
    with xr.open_dataset(path) as ds:
        return ds.isel(time=slice(-frames, None)).load()


# ---------------------------------------------------------------------------- valid input


def test_valid_fixture_gives_last_frames_grid_and_attrs() -> None:
    radar = read_radar_netcdf(valid_bytes(), TINY)
    expected = _fixture_frames(broken_netcdf.VALID_FIXTURE, TINY.frames_in)

    assert radar.rain_mm_h.shape == (7, 64, 64)
    assert radar.rain_mm_h.dtype == np.float32
    np.testing.assert_array_equal(radar.rain_mm_h, expected["precip"].values)
    assert 0 < np.isnan(radar.rain_mm_h).mean() < 0.2  # the crop has some pixels without coverage
    assert np.nanmin(radar.rain_mm_h) >= 0 and np.nanmax(radar.rain_mm_h) > 10
    np.testing.assert_array_equal(radar.times, expected["time"].values)
    assert radar.times.dtype == np.dtype("datetime64[ns]")
    assert radar.interval_s == 300 and not radar.converted_from_dbz
    assert radar.dims == ("y", "x")
    np.testing.assert_array_equal(radar.grid["x"].values, expected["x"].values)
    assert radar.grid["y"].attrs["standard_name"] == "projection_y_coordinate"
    assert radar.grid_mapping_name == "crs"
    assert radar.grid["crs"].attrs["crs_wkt"] == expected["crs"].attrs["crs_wkt"]
    assert set(radar.grid.variables) == {"x", "y", "crs"}
    assert radar.source_attrs["institution"].startswith("MeteoSwiss")


def test_latlon_fixture_is_accepted() -> None:
    config = TINY.replace(interval_s=120)
    radar = read_radar_netcdf(LATLON_FIXTURE.read_bytes(), config)
    assert radar.dims == ("lat", "lon")
    assert radar.rain_mm_h.shape == (7, 64, 64)
    assert radar.grid["lat"].attrs["units"] == "degrees_north"
    assert radar.grid["crs"].attrs["grid_mapping_name"] == "latitude_longitude"


def test_examples_are_valid_inputs_and_dbz_converts() -> None:
    examples = REPO / "examples"
    rate = read_radar_netcdf((examples / "mch_20150515_256.nc").read_bytes(), TINY)
    dbz = read_radar_netcdf((examples / "mch_20150515_256_dbz.nc").read_bytes(), TINY)
    assert rate.rain_mm_h.shape == dbz.rain_mm_h.shape == (7, 256, 256)
    assert dbz.converted_from_dbz and not rate.converted_from_dbz
    np.testing.assert_array_equal(np.isnan(rate.rain_mm_h), np.isnan(dbz.rain_mm_h))
    wet = rate.rain_mm_h > 1.0
    assert wet.mean() > 0.2  # the README sample has rain in it
    # 0.5 dBZ packing of the example: +-0.25 dBZ is +-3.7 % in R under Marshall-Palmer
    ratio = dbz.rain_mm_h[wet] / rate.rain_mm_h[wet]
    assert np.all(np.abs(ratio - 1) < 0.04)


def test_dbz_input_uses_the_stated_zr_relation() -> None:
    ds = valid_dataset()
    rain = ds["precip"].values
    with np.errstate(divide="ignore"):
        dbz = 10 * np.log10(200.0 * rain**1.6)
    dbz = np.where(rain > 0, dbz, -20.0)  # rain-free pixels: a weak echo
    dbz[np.isnan(rain)] = np.nan  # no coverage stays missing
    ds["precip"] = (
        ds["precip"].dims,
        dbz.astype(np.float32),
        {"standard_name": "equivalent_reflectivity_factor", "units": "dBZ", "grid_mapping": "crs"},
    )
    data = to_bytes(ds, keep_encoding=False)

    marshall_palmer = read_radar_netcdf(data, TINY)
    assert marshall_palmer.converted_from_dbz
    used = rain[-7:]
    wet = used > 0.1
    np.testing.assert_allclose(marshall_palmer.rain_mm_h[wet], used[wet], rtol=1e-4)
    np.testing.assert_array_equal(np.isnan(marshall_palmer.rain_mm_h), np.isnan(used))

    other = read_radar_netcdf(data, TINY, zr_a=300.0, zr_b=1.4)
    expected = dbz_to_mm_h(dbz[-7:], a=300.0, b=1.4)
    np.testing.assert_allclose(other.rain_mm_h[wet], expected[wet], rtol=1e-5)
    assert not np.allclose(other.rain_mm_h[wet], marshall_palmer.rain_mm_h[wet], rtol=0.05)


@pytest.mark.parametrize(
    ("units", "scale"),
    [
        ("mm/h", 1.0),
        ("mm hr-1", 1.0),
        (" MM  H-1 ", 1.0),
        ("m s-1", 1 / 3.6e6),
        ("mm s-1", 1 / 3600),
    ],
)
def test_rain_rate_unit_spellings_are_accepted(units: str, scale: float) -> None:
    ds = valid_dataset()
    ds["precip"] = ds["precip"] * np.float32(scale)
    ds["precip"].attrs.update(
        standard_name="lwe_precipitation_rate", units=units, grid_mapping="crs"
    )
    radar = read_radar_netcdf(to_bytes(ds, keep_encoding=False), TINY)
    expected = valid_dataset()["precip"].values[-7:]
    np.testing.assert_allclose(radar.rain_mm_h, expected, rtol=1e-5, atol=1e-6)


def test_small_negatives_are_set_to_zero_and_unused_frames_are_not_read() -> None:
    values = valid_dataset()["precip"].values.copy()
    values[-1, 0, 0] = -0.005  # packing noise: within tolerance
    values[0] = 1.0e6  # the first frame is absurd but outside the 7 frames used
    ds = valid_dataset()
    ds["precip"].values = values
    radar = read_radar_netcdf(to_bytes(ds), TINY)
    assert radar.rain_mm_h[-1, 0, 0] == 0.0
    assert np.nanmax(radar.rain_mm_h) < 500


def test_a_huge_unrelated_dimension_is_never_read() -> None:
    radar = read_radar_netcdf(broken_netcdf.valid_with_huge_unrelated_variable(), TINY)
    assert radar.rain_mm_h.shape == (7, 64, 64)


@pytest.mark.skipif(not SHARED_RADAR.is_dir(), reason="../shared/data/radar not present")
@pytest.mark.parametrize(
    "name", sorted(p.name for p in SHARED_RADAR.glob("*.nc")) if SHARED_RADAR.is_dir() else []
)
def test_shared_radar_events_pass_validation(name: str) -> None:
    """Every real event passes as it is for a 1 km, 5 min model (whatever its grid size,
    interval and pixel size); a crop at its own interval passes with its frames unchanged."""
    path = SHARED_RADAR / name
    with xr.open_dataset(path) as ds:
        interval_s = int(ds.attrs["frame_interval_seconds"])
        _, row_dim, col_dim = ds["precip"].dims
        height, width = ds.sizes[row_dim], ds.sizes[col_dim]
        last_time = ds["time"].values[-1]
        crop = ds.isel(
            time=slice(-TINY.frames_in, None),
            # the centre: a corner can lie outside radar coverage (KNMI)
            **{row_dim: slice(max(0, height // 2 - 128), height // 2 + 128)},
            **{col_dim: slice(max(0, width // 2 - 128), width // 2 + 128)},
        ).load()

    radar = read_radar_netcdf(path.read_bytes(), TINY, resample=False)
    assert radar.rain_mm_h.shape == (TINY.frames_in, height, width)
    assert radar.times[-1] == last_time
    assert (np.diff(radar.times) == np.timedelta64(TINY.interval_s, "s")).all()
    assert radar.block == ((2, 2) if name.startswith("bom") else (1, 1))

    radar = read_radar_netcdf(to_bytes(crop), TINY.replace(interval_s=interval_s))
    np.testing.assert_array_equal(radar.rain_mm_h, crop["precip"].values)
    assert radar.grid_mapping_name == "crs"


# ---------------------------------------------------------------------------- broken input


@pytest.mark.parametrize("name", sorted(BROKEN_CASES))
def test_broken_file_gets_its_4xx_with_a_useful_detail(name: str) -> None:
    case = BROKEN_CASES[name]
    with pytest.raises(RadarInputError) as caught:
        read_radar_netcdf(case.make(), TINY)
    error = caught.value
    assert (error.status, error.code) == (case.status, case.code), error.detail
    assert error.status in (400, 413, 415, 422)
    # names the problem and says what to do (every detail carries a fix after ';' or ':')
    assert len(error.detail) > 50 and any(sep in error.detail for sep in (";", ":"))
    assert str(error).startswith(error.code)


@pytest.mark.parametrize(
    ("name", "fragments"),
    [
        ("wrong_units", ["'mm'", "mm h-1"]),
        ("wrong_interval", ["1200 s", "from 1 to 15 min", "1, 2.5, 5 min"]),
        ("too_few_frames", ["span 20 min", "30 min"]),
        ("billions_of_cells_grid", ["200000 x 200000", "2048"]),
        ("billions_of_records_netcdf3", ["2,147,483,647", "last 30 min"]),
        ("no_coverage_last_frame", ["0.00%", "at least 1%"]),
        ("coarse_pixels", ["2000 m x 2000 m", "1000 m", "500 m"]),
        ("several_problems", ["3 problems", "wrong-units", "interval-mismatch", "pixel-size"]),
        ("irregular_times", ["600 s", "300 s"]),
        ("missing_standard_name", ["'precip'", "standard_name", "lwe_precipitation_rate"]),
        ("negative_values", ["100 negative", "_FillValue"]),
        ("text_file", ["not NetCDF", "time,y,x"]),
        ("above_model_range", ["16 value(s) above 128 mm h-1", "up to 300", "rain_max_mm_h"]),
    ],
)
def test_details_name_what_was_found_and_what_is_needed(name: str, fragments: list[str]) -> None:
    with pytest.raises(RadarInputError) as caught:
        read_radar_netcdf(BROKEN_CASES[name].make(), TINY)
    for fragment in fragments:
        assert fragment in caught.value.detail


def test_hostile_files_are_refused_under_a_tight_memory_limit() -> None:
    """With address space capped at +1 GiB, the files declaring terabytes get their 4xx."""
    hostile = [
        "billions_of_cells_grid",
        "billions_of_records_netcdf3",
        "oversized_chunks",
        "grid_too_large",
    ]
    script = textwrap.dedent(
        f"""
        import resource
        from models.config import TINY
        from service.netcdf_io import RadarInputError, read_radar_netcdf
        from tests.service.broken_netcdf import BROKEN_CASES
        files = {{name: BROKEN_CASES[name].make() for name in {hostile!r}}}
        with open("/proc/self/statm") as statm:
            used = int(statm.read().split()[0]) * resource.getpagesize()
        limit = used + (1 << 30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        for name, data in files.items():
            try:
                read_radar_netcdf(data, TINY)
                print(name, "accepted")
            except RadarInputError as exc:
                print(name, exc.status, exc.code)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    outcomes = dict(line.split(" ", 1) for line in done.stdout.strip().splitlines())
    for name in hostile:
        case = BROKEN_CASES[name]
        assert outcomes[name] == f"{case.status} {case.code}"


def test_parallel_reads_and_writes_from_threads_do_not_crash() -> None:
    """The API parses uploads in a thread pool; netCDF-C is not thread-safe (segfaults unlocked).

    Runs in a child process so that a crash is a failed test, not a dead test runner.
    """
    script = textwrap.dedent(
        """
        from concurrent.futures import ThreadPoolExecutor
        import numpy as np
        from models.config import TINY
        from service.netcdf_io import RadarInputError, read_radar_netcdf, write_forecast_netcdf
        from tests.service.broken_netcdf import BROKEN_CASES, valid_bytes
        good, bad = valid_bytes(), BROKEN_CASES["wrong_interval"].make()
        reference = read_radar_netcdf(good, TINY).rain_mm_h

        def work(_):
            for _ in range(8):
                radar = read_radar_netcdf(good, TINY)
                assert np.array_equal(radar.rain_mm_h, reference, equal_nan=True)
                forecast = np.ones((2, 3, 64, 64), np.float32)
                write_forecast_netcdf(forecast, radar, interval_s=300, attrs={})
                try:
                    read_radar_netcdf(bad, TINY)
                except RadarInputError as exc:
                    assert exc.code == "interval-mismatch"
            return True

        with ThreadPoolExecutor(4) as pool:
            print(all(pool.map(work, range(4))))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.strip() == "True"


def test_corrupted_bytes_never_raise_anything_but_radar_input_error() -> None:
    rng = np.random.default_rng(20150515)
    good = valid_bytes()
    outcomes = set()
    for _ in range(60):
        corrupt = bytearray(good)
        for position in rng.integers(0, len(corrupt), size=int(rng.integers(1, 40))):
            corrupt[position] = int(rng.integers(0, 256))
        try:
            result = read_radar_netcdf(bytes(corrupt), TINY)
            assert isinstance(result, RadarInput)
            outcomes.add("accepted")
        except RadarInputError as exc:
            assert exc.status in (400, 413, 415, 422)
            outcomes.add(exc.code)
    assert "unreadable-netcdf" in outcomes


# ---------------------------------------------------------------------------- output


def _forecast_for(radar: RadarInput, members: int, leads: int, seed: int) -> np.ndarray:
    """A rain-like `(M, T, H, W)` forecast [mm h-1]: gamma-distributed, mostly dry."""
    rng = np.random.default_rng(seed)
    height, width = radar.rain_mm_h.shape[1:]
    wet = rng.random((members, leads, height, width)) < 0.4
    rain = rng.gamma(0.6, 3.0, size=(members, leads, height, width))
    return np.where(wet, rain, 0.0).astype(np.float32)


@pytest.fixture(scope="module")
def cf_checker():
    cfchecks = pytest.importorskip("cfchecker.cfchecks")

    def check(path: Path) -> dict[str, int]:
        checker = cfchecks.CFChecker(
            cfStandardNamesXML=str(CF_TABLES / "cf-standard-name-table.xml"),
            cfAreaTypesXML=str(CF_TABLES / "area-type-table.xml"),
            cfRegionNamesXML=str(CF_TABLES / "standardized-region-list.xml"),
            silent=True,
        )
        results = checker.checker(str(path))
        counts = dict(checker.get_total_counts())
        # CF 7.3 recommends bounds on a coordinate a statistic was computed over; members are
        # points, so the mean's `realization: mean` gets this one warning and no invented bounds
        mean_warnings = results["variables"].get("precip_mean", {}).get("WARN", [])
        counts["WARN"] -= mean_warnings.count(CF_REALIZATION_BOUNDS_WARNING)
        return counts

    return check


# every product of the file, as the `written` forecast has them
EVERY_PRODUCT: dict[str, Any] = {
    "interval_s": TINY.interval_s,
    "thresholds_mm_h": (0.1, 1, 5, 10),
    "products": ("members", "mean", "exceedance", "percentiles"),
    "percentiles": (10, 50, 90),
    "attrs": JOB_ATTRS,
}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[RadarInput, np.ndarray, Path]:
    radar = read_radar_netcdf(valid_bytes(), TINY)
    forecast = _forecast_for(radar, members=5, leads=TINY.frames_out, seed=7)
    data = write_forecast_netcdf(forecast, radar, **EVERY_PRODUCT)
    path = tmp_path_factory.mktemp("forecast") / "forecast.nc"
    path.write_bytes(data)
    return radar, forecast, path


def test_output_dims_coords_and_times(written: tuple[RadarInput, np.ndarray, Path]) -> None:
    radar, forecast, path = written
    with xr.open_dataset(path) as ds:
        assert dict(ds["precip"].sizes) == {"realization": 5, "time": 6, "y": 64, "x": 64}
        assert ds["precip_mean"].dims == ("time", "y", "x")
        assert ds[PROBABILITY].dims == ("threshold", "time", "y", "x")
        assert ds["precip_percentile"].dims == ("percentile", "time", "y", "x")
        np.testing.assert_allclose(ds["threshold"].values, [0.1, 1, 5, 10])
        np.testing.assert_array_equal(ds["percentile"].values, [10, 50, 90])
        np.testing.assert_array_equal(ds["realization"].values, np.arange(5))
        assert ds["realization"].attrs["standard_name"] == "realization"

        last_input = radar.times[-1]
        assert ds["forecast_reference_time"].values == last_input
        steps = np.arange(1, 7) * np.timedelta64(300, "s")
        np.testing.assert_array_equal(ds["time"].values, last_input + steps)
        period = ds["forecast_period"]
        assert period.attrs["standard_name"] == "forecast_period"
        np.testing.assert_array_equal(
            np.asarray(period.values).astype("timedelta64[s]").astype(np.int64)
            if np.issubdtype(period.dtype, np.timedelta64)
            else period.values,
            np.arange(1, 7) * 300,
        )


def test_output_units_grid_and_attributes(written: tuple[RadarInput, np.ndarray, Path]) -> None:
    radar, _, path = written
    with xr.open_dataset(path) as ds:
        # only the members answer to the CF name; the statistics say what they are over
        assert ds["precip"].attrs["standard_name"] == "lwe_precipitation_rate"
        assert "standard_name" not in ds["precip_mean"].attrs
        assert "standard_name" not in ds["precip_percentile"].attrs
        assert ds["precip_mean"].attrs["cell_methods"] == "realization: mean"
        for name in ("precip", "precip_mean", "precip_percentile"):
            assert ds[name].attrs["units"] == "mm h-1"
            assert ds[name].attrs["ancillary_variables"] == PROBABILITY
        assert ds[PROBABILITY].attrs["units"] == "1"
        assert ds["threshold"].attrs["units"] == "mm h-1"
        assert ds["threshold"].attrs["spp__relative_to_threshold"] == "greater_than"
        assert ds["percentile"].attrs["units"] == "%"
        for name in ("precip", "precip_mean", PROBABILITY, "precip_percentile"):
            assert ds[name].attrs["grid_mapping"] == "crs"
        for dim in ("x", "y"):
            np.testing.assert_array_equal(ds[dim].values, radar.grid[dim].values)
            assert ds[dim].attrs == radar.grid[dim].attrs
        assert ds["crs"].attrs["crs_wkt"] == radar.grid["crs"].attrs["crs_wkt"]
        assert ds["crs"].attrs["grid_mapping_name"] == "oblique_mercator"

        attrs = ds.attrs
        assert attrs["Conventions"] == "CF-1.8"
        assert attrs["title"] and attrs["institution"] and attrs["history"]
        assert "tiny 0.1.0" in attrs["source"] and JOB_ATTRS["weights_sha256"] in attrs["source"]
        assert attrs["job_id"] == JOB_ATTRS["job_id"] and attrs["job_id"] in attrs["history"]
        assert (attrs["members"], attrs["steps"], attrs["seed"]) == (5, 5, 1234)
        assert json.loads(attrs["constraint"]) == JOB_ATTRS["constraint"]
        assert attrs["input_institution"].startswith("MeteoSwiss")

        encoding = ds["precip"].encoding
        assert encoding["zlib"] and encoding["shuffle"]
        assert encoding["_FillValue"] == np.float32(-1.0)


def test_output_values_and_missing_coverage(
    written: tuple[RadarInput, np.ndarray, Path],
) -> None:
    radar, forecast, path = written
    no_coverage = np.isnan(radar.rain_mm_h[-1])
    assert no_coverage.any()
    expected = np.where(no_coverage, np.nan, forecast)
    with xr.open_dataset(path) as ds:
        # rain rates are stored rounded to multiples of 1/128 mm h-1
        np.testing.assert_allclose(ds["precip"].values, expected, rtol=0, atol=QUANTUM_MM_H / 2)
        np.testing.assert_array_equal(np.isnan(ds["precip"].values), np.isnan(expected))
        for name in ("precip_mean", PROBABILITY, "precip_percentile"):
            values = ds[name].values
            assert np.isnan(values[..., no_coverage]).all()
            assert not np.isnan(values[..., ~no_coverage]).any()
        covered = ~no_coverage
        # the statistics are of the stored (rounded) members, then rounded themselves
        stored_members = ds["precip"].values[..., covered]
        np.testing.assert_allclose(
            ds["precip_mean"].values[:, covered],
            stored_members.mean(axis=0),
            rtol=1e-6,
            atol=QUANTUM_MM_H / 2,
        )
        exceed = ds[PROBABILITY].sel(threshold=1.0).values
        np.testing.assert_allclose(
            exceed[:, covered], (stored_members > 1.0).mean(axis=0), rtol=1e-6
        )
        assert ((exceed[:, covered] >= 0) & (exceed[:, covered] <= 1)).all()
        np.testing.assert_allclose(
            ds["precip_percentile"].values[:, :, covered],
            np.percentile(stored_members, [10, 50, 90], axis=0),
            rtol=1e-5,
            atol=QUANTUM_MM_H / 2,
        )
    with xr.open_dataset(path, mask_and_scale=False) as raw:
        stored = raw["precip"].values
        np.testing.assert_array_equal(stored[..., no_coverage], -1.0)
        assert (stored[..., covered] >= 0).all()
        steps = stored / QUANTUM_MM_H  # on the 1/128 mm h-1 grid, so the low bits compress away
        np.testing.assert_array_equal(steps, np.round(steps))
        exceed = raw[PROBABILITY].values[..., covered]
        np.testing.assert_array_equal(exceed * 5, np.round(exceed * 5))  # k / 5 members, exact


def test_output_passes_cfchecks(written: tuple[RadarInput, np.ndarray, Path], cf_checker) -> None:
    counts = cf_checker(written[2])
    assert counts["FATAL"] == 0 and counts["ERROR"] == 0, counts
    assert counts["WARN"] == 0, counts


def test_latlon_output_with_mean_only_passes_cfchecks(tmp_path: Path, cf_checker) -> None:
    config = TINY.replace(interval_s=120)
    radar = read_radar_netcdf(LATLON_FIXTURE.read_bytes(), config)
    forecast = _forecast_for(radar, members=3, leads=4, seed=1)
    data = write_forecast_netcdf(
        forecast, radar, interval_s=120, products=("mean", "exceedance"), attrs={"seed": None}
    )
    path = tmp_path / "latlon.nc"
    path.write_bytes(data)
    with xr.open_dataset(path) as ds:
        assert set(ds.data_vars) == {"crs", "precip_mean", PROBABILITY}
        assert ds["precip_mean"].dims == ("time", "lat", "lon")
        assert "realization" not in ds.dims and "seed" not in ds.attrs
        np.testing.assert_array_equal(ds["lat"].values, radar.grid["lat"].values)
        assert ds["time"].values[0] == radar.times[-1] + np.timedelta64(120, "s")
    counts = cf_checker(path)
    assert counts["FATAL"] == 0 and counts["ERROR"] == 0, counts


def test_writer_refuses_a_forecast_off_the_input_grid() -> None:
    radar = read_radar_netcdf(valid_bytes(), TINY)
    with pytest.raises(ValueError, match="64, 64"):
        write_forecast_netcdf(np.zeros((2, 6, 32, 32), np.float32), radar, interval_s=300, attrs={})
    with pytest.raises(ValueError, match="unknown"):
        write_forecast_netcdf(
            np.zeros((2, 6, 64, 64), np.float32),
            radar,
            interval_s=300,
            products=("members", "spaghetti"),
            attrs={},
        )


@pytest.mark.parametrize(
    ("setting", "chunks"),
    [
        (Compression(complevel=0, shuffle=False), (1, 1, 64, 64)),
        (Compression(complevel=1, shuffle=False), (1, 1, 64, 64)),
        (Compression(complevel=9, chunking="leads"), (1, TINY.frames_out, 64, 64)),
    ],
)
def test_storage_settings_change_the_encoding_not_the_values(
    written: tuple[RadarInput, np.ndarray, Path],
    tmp_path: Path,
    setting: Compression,
    chunks: tuple[int, ...],
) -> None:
    radar, forecast, default_path = written
    path = tmp_path / "forecast.nc"
    path.write_bytes(write_forecast_netcdf(forecast, radar, **EVERY_PRODUCT, compression=setting))
    with xr.open_dataset(path) as ds, xr.open_dataset(default_path) as default:
        encoding = ds["precip"].encoding
        assert encoding["chunksizes"] == chunks
        assert encoding["zlib"] == (setting.complevel > 0)
        assert encoding["shuffle"] == setting.shuffle
        if setting.complevel:
            assert encoding["complevel"] == setting.complevel
        for name in ("precip", "precip_mean", PROBABILITY, "precip_percentile"):
            np.testing.assert_array_equal(ds[name].values, default[name].values)


def test_storage_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="complevel"):
        Compression(complevel=10)
    with pytest.raises(ValueError, match="chunking"):
        Compression(chunking="tiles")
