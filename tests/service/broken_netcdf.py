"""A corpus of broken and hostile radar NetCDF files, as bytes, each with the 4xx it must get.

Every case starts from the valid 64 x 64 x 9-frame MeteoSwiss crop in `tests/data/` and breaks
one thing. The expected `(status, code)` are those of `service.netcdf_io.read_radar_netcdf` for
`models.config.TINY` (7 frames in at 300 s, grid factor 16, at most 256 px); they hold for any
config with a 300-s interval, at most 7 frames in, a grid factor dividing 64 and a maximum grid
of 64 to 4095 px. The hostile files are small but declare enormous shapes; reading their data
would take gigabytes to terabytes.

Used by the NetCDF tests and by the API/reliability tests (post each case, expect its status).
Files are made under `NETCDF_LIBRARY_LOCK`, so making them beside a server thread that parses
uploads is safe (netCDF-C is not thread-safe).

>>> from tests.service.broken_netcdf import BROKEN_CASES
>>> case = BROKEN_CASES["wrong_units"]
>>> data = case.make()  # bytes of a NetCDF file
>>> case.status, case.code
(422, 'wrong-units')
"""

from __future__ import annotations

import functools
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import netCDF4
import numpy as np
import xarray as xr

from service.radar_input import NETCDF_LIBRARY_LOCK

VALID_FIXTURE = Path(__file__).resolve().parents[1] / "data" / "mch_20150515_64.nc"
INTERVAL_S = 300


@dataclass(frozen=True)
class BrokenCase:
    """One broken input: `make()` gives the file's bytes; `status`/`code` the expected error."""

    name: str
    status: int
    code: str
    make: Callable[[], bytes]
    what: str


def valid_bytes() -> bytes:
    """The unbroken fixture: 9 frames of 64 x 64 px at 300 s, rain rate in mm h-1."""
    return VALID_FIXTURE.read_bytes()


@functools.lru_cache(maxsize=1)
def _fixture() -> xr.Dataset:
    with NETCDF_LIBRARY_LOCK, xr.open_dataset(VALID_FIXTURE) as ds:
        return ds.load()


def valid_dataset() -> xr.Dataset:
    """A fresh, decoded copy of the valid fixture (precip as NaN-masked float32)."""
    return _fixture().copy(deep=True)


def to_bytes(ds: xr.Dataset, *, keep_encoding: bool = True) -> bytes:
    """NetCDF-4 bytes of `ds` (encodings dropped when the layout changed)."""
    if not keep_encoding:
        ds = ds.copy()
        for var in ds.variables.values():
            var.encoding = {}
    with NETCDF_LIBRARY_LOCK:
        return bytes(ds.to_netcdf(engine="netcdf4", format="NETCDF4"))


def _with_precip(values: np.ndarray) -> bytes:
    ds = valid_dataset()
    ds["precip"].values = values.astype(np.float32)
    return to_bytes(ds)


def _with_times(seconds_from_start: list[int]) -> bytes:
    ds = valid_dataset().isel(time=slice(0, len(seconds_from_start)))
    start = ds["time"].values[0]
    ds = ds.assign_coords(time=start + np.asarray(seconds_from_start).astype("timedelta64[s]"))
    ds["time"].attrs = valid_dataset()["time"].attrs
    return to_bytes(ds)


# ---------------------------------------------------------------------------- not NetCDF at all


def empty_file() -> bytes:
    return b""


def text_file() -> bytes:
    return b"time,y,x,precip\n2015-05-15T18:20:00,0,0,0.5\n" * 20


def truncated_header() -> bytes:
    """The first 2 KiB of a valid file: the HDF5 signature, then nothing usable."""
    return valid_bytes()[:2048]


def truncated_data() -> bytes:
    """A valid file cut in the middle of its compressed frames."""
    data = valid_bytes()
    return data[: len(data) // 2]


# ---------------------------------------------------------------------------- the variable


def missing_standard_name() -> bytes:
    ds = valid_dataset()
    del ds["precip"].attrs["standard_name"]
    return to_bytes(ds)


def no_rain_variable() -> bytes:
    """Only the grid mapping and coordinates; the data variable is missing."""
    return to_bytes(valid_dataset().drop_vars("precip"))


def two_rain_variables() -> bytes:
    ds = valid_dataset()
    ds["precip_copy"] = ds["precip"].copy()
    return to_bytes(ds)


def string_variable() -> bytes:
    """precip holds text (a NetCDF-4 string variable)."""
    ds = valid_dataset()
    text = np.full(ds["precip"].shape, "0.5 mm/h", dtype=object)
    ds["precip"] = (ds["precip"].dims, text, ds["precip"].attrs)
    return to_bytes(ds, keep_encoding=False)


def int8_variable() -> bytes:
    """precip as int8 without scale_factor: whole mm/h clipped to 127, unusable as rain rate."""
    ds = valid_dataset()
    ints = np.clip(np.nan_to_num(ds["precip"].values), 0, 127).astype(np.int8)
    ds["precip"] = (ds["precip"].dims, ints, ds["precip"].attrs)
    return to_bytes(ds, keep_encoding=False)


def wrong_units() -> bytes:
    """Accumulation per 5 min ("mm") instead of a rate: a frequent mistake."""
    ds = valid_dataset()
    ds["precip"].attrs["units"] = "mm"
    return to_bytes(ds)


def reflectivity_wrong_units() -> bytes:
    """Reflectivity given in linear Z units instead of dBZ."""
    ds = valid_dataset()
    ds["precip"].attrs.update(standard_name="equivalent_reflectivity_factor", units="mm6 m-3")
    return to_bytes(ds)


def transposed_dims() -> bytes:
    return to_bytes(valid_dataset().transpose("y", "x", "time"), keep_encoding=False)


def extra_level_dim() -> bytes:
    """(time, level, y, x) with a size-1 level."""
    ds = valid_dataset()
    ds["precip"] = ds["precip"].expand_dims(level=[0.0], axis=1)
    return to_bytes(ds, keep_encoding=False)


def single_frame_2d() -> bytes:
    """(y, x): one frame without a time dimension."""
    ds = valid_dataset().isel(time=-1).drop_vars("time")
    return to_bytes(ds, keep_encoding=False)


def time_without_units() -> bytes:
    """Time stored as plain frame numbers (no CF 'seconds since ...')."""
    ds = valid_dataset()
    ds = ds.assign_coords(time=np.arange(ds.sizes["time"], dtype=np.int32))
    ds["time"].attrs = {"standard_name": "time", "units": "frames"}
    return to_bytes(ds, keep_encoding=False)


# ---------------------------------------------------------------------------- time axis


def shuffled_times() -> bytes:
    return _with_times([0, 300, 600, 1200, 900, 1500, 1800, 2100, 2400])


def duplicate_times() -> bytes:
    return _with_times([0, 300, 600, 900, 900, 1200, 1500, 1800, 2100])


def irregular_times() -> bytes:
    """A missing frame: 300-s steps with one 600-s gap."""
    return _with_times([0, 300, 600, 1200, 1500, 1800, 2100, 2400])


def wrong_interval() -> bytes:
    """Regular 20-min frames: outside the 1-15 min that can be brought onto 5-min steps."""
    return _with_times([1200 * k for k in range(9)])


def too_few_frames() -> bytes:
    return to_bytes(valid_dataset().isel(time=slice(-5, None)))


# ---------------------------------------------------------------------------- grid


def _declared_only(
    n_time: int, height: int, width: int, *, chunks: tuple[int, int, int] | None = None
) -> bytes:
    """A NetCDF-4 file whose precip declares `(n_time, height, width)` but stores no data.

    Unwritten chunks take no space: the file is a few KiB, yet reading precip would return
    `n_time * height * width` fill values.
    """
    chunks = chunks or (1, min(height, 1024), min(width, 1024))
    with NETCDF_LIBRARY_LOCK, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "declared.nc"
        nc = netCDF4.Dataset(path, "w", format="NETCDF4")
        nc.Conventions = "CF-1.8"
        nc.createDimension("time", n_time)
        nc.createDimension("y", height)
        nc.createDimension("x", width)
        time = nc.createVariable("time", "i8", ("time",), chunksizes=(min(n_time, 4096),))
        time.standard_name, time.units = "time", "seconds since 1970-01-01 00:00:00"
        time[: min(n_time, 9)] = 1431700200 + INTERVAL_S * np.arange(min(n_time, 9))
        for name, size in (("y", height), ("x", width)):
            coord = nc.createVariable(name, "f8", (name,), chunksizes=(min(size, 4096),))
            coord.standard_name, coord.units = f"projection_{name}_coordinate", "m"
        precip = nc.createVariable(
            "precip", "f4", ("time", "y", "x"), zlib=True, chunksizes=chunks, fill_value=-1.0
        )
        precip.standard_name, precip.units = "lwe_precipitation_rate", "mm h-1"
        nc.close()
        return path.read_bytes()


def grid_too_large() -> bytes:
    """9 frames of 4096 x 4096 px (declared; the file is small)."""
    return _declared_only(9, 4096, 4096)


def billions_of_cells_grid() -> bytes:
    """9 frames of 200,000 x 200,000 px: 3.6e11 cells, 1.4 TB of float32, in a ~10 KiB file."""
    return _declared_only(9, 200_000, 200_000)


def oversized_chunks() -> bytes:
    """A decompression bomb: 9000 frames of 64 x 64 px in one chunk (3.7e7 cells, 147 MB).

    Reading any frame decompresses the whole chunk.
    """
    return _declared_only(9000, 64, 64, chunks=(9000, 64, 64))


def billions_of_records_netcdf3() -> bytes:
    """A NetCDF-3 file whose header claims 2**31 - 1 records of 64 x 64 px (8.8e12 cells).

    Written as a valid classic file with 9 records, then the record count in the header (bytes
    4-8, big-endian) is overwritten: the file stays 150 KiB.
    """
    ds = valid_dataset()
    with NETCDF_LIBRARY_LOCK, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "classic.nc"
        ds.to_netcdf(
            path,
            format="NETCDF3_CLASSIC",
            engine="netcdf4",
            unlimited_dims=["time"],
            encoding={
                "time": {"dtype": "int32"},
                "precip": {"_FillValue": np.float32(-1.0), "dtype": "float32"},
            },
        )
        data = bytearray(path.read_bytes())
    assert data[:4] == b"CDF\x01"
    data[4:8] = struct.pack(">i", 2**31 - 1)
    return bytes(data)


# ---------------------------------------------------------------------------- values


def all_missing() -> bytes:
    return _with_precip(np.full(valid_dataset()["precip"].shape, np.nan))


def no_coverage_last_frame() -> bytes:
    """Earlier frames have data, the last one is all missing: nothing to forecast from."""
    values = valid_dataset()["precip"].values.copy()
    values[-1] = np.nan
    return _with_precip(values)


def coarse_pixels() -> bytes:
    """2 km pixels (the coordinates stretched) for a 1 km model."""
    ds = valid_dataset()
    ds = ds.assign_coords(x=ds["x"] * 2, y=ds["y"] * 2)
    for name in ("x", "y"):
        ds[name].attrs = valid_dataset()[name].attrs
    return to_bytes(ds)


def several_problems() -> bytes:
    """Wrong units, 20-min frames and 2 km pixels at once: one 422 lists all three."""
    ds = valid_dataset()
    ds = ds.assign_coords(x=ds["x"] * 2, y=ds["y"] * 2)
    for name in ("x", "y"):
        ds[name].attrs = valid_dataset()[name].attrs
    ds = ds.isel(time=slice(0, 9)).assign_coords(
        time=ds["time"].values[0] + (1200 * np.arange(9)).astype("timedelta64[s]")
    )
    ds["time"].attrs = valid_dataset()["time"].attrs
    ds["precip"].attrs["units"] = "furlongs"
    return to_bytes(ds)


def infinite_values() -> bytes:
    values = valid_dataset()["precip"].values.copy()
    values[-1, 10:12, 10:12] = np.inf
    return _with_precip(values)


def negative_values() -> bytes:
    values = valid_dataset()["precip"].values.copy()
    values[-2, 20:30, 20:30] = -5.0
    return _with_precip(values)


def absurd_values() -> bytes:
    """10,000 mm/h: reflectivity or a wrong scale stored as rain rate."""
    values = valid_dataset()["precip"].values.copy()
    values[-1, 30:34, 30:34] = 1.0e4
    return _with_precip(values)


def above_model_range() -> bytes:
    """300 mm/h: a plausible rain rate, but above the model's range (rain_max_mm_h, 128)."""
    values = valid_dataset()["precip"].values.copy()
    values[-1, 30:34, 30:34] = 300.0
    return _with_precip(values)


# ---------------------------------------------------------------------------- hostile but valid


def valid_with_huge_unrelated_variable() -> bytes:
    """The valid fixture plus a variable over a declared 3e9-long dimension it never uses.

    A reader that decodes every variable (or loads every index) needs 24 GB; only precip and its
    coordinates matter, so this file must be accepted.
    """
    with NETCDF_LIBRARY_LOCK, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "extra.nc"
        path.write_bytes(valid_bytes())
        nc = netCDF4.Dataset(path, "a")
        nc.createDimension("station", 3_000_000_000)
        station = nc.createVariable("station", "f8", ("station",), chunksizes=(1 << 20,))
        station.long_name = "station number"
        nc.close()
        return path.read_bytes()


def _case(make: Callable[[], bytes], status: int, code: str) -> BrokenCase:
    what = (make.__doc__ or make.__name__.replace("_", " ")).strip().splitlines()[0]
    return BrokenCase(name=make.__name__, status=status, code=code, make=make, what=what)


BROKEN_CASES: dict[str, BrokenCase] = {
    case.name: case
    for case in (
        _case(empty_file, 400, "empty-file"),
        _case(text_file, 415, "not-netcdf"),
        _case(truncated_header, 400, "unreadable-netcdf"),
        _case(truncated_data, 400, "unreadable-netcdf"),
        _case(missing_standard_name, 422, "no-rain-variable"),
        _case(no_rain_variable, 422, "no-rain-variable"),
        _case(two_rain_variables, 422, "ambiguous-rain-variable"),
        _case(string_variable, 422, "wrong-dtype"),
        _case(int8_variable, 422, "wrong-dtype"),
        _case(wrong_units, 422, "wrong-units"),
        _case(reflectivity_wrong_units, 422, "wrong-units"),
        _case(transposed_dims, 422, "wrong-dims"),
        _case(extra_level_dim, 422, "wrong-dims"),
        _case(single_frame_2d, 422, "wrong-dims"),
        _case(time_without_units, 422, "bad-time-units"),
        _case(shuffled_times, 422, "unsorted-times"),
        _case(duplicate_times, 422, "duplicate-times"),
        _case(irregular_times, 422, "irregular-times"),
        _case(wrong_interval, 422, "interval-mismatch"),
        _case(too_few_frames, 422, "too-few-frames"),
        _case(grid_too_large, 413, "grid-too-large"),
        _case(billions_of_cells_grid, 413, "grid-too-large"),
        _case(no_coverage_last_frame, 422, "no-coverage"),
        _case(coarse_pixels, 422, "pixel-size-mismatch"),
        _case(several_problems, 422, "several-problems"),
        _case(oversized_chunks, 413, "chunks-too-large"),
        _case(billions_of_records_netcdf3, 413, "too-many-frames"),
        _case(all_missing, 422, "all-missing"),
        _case(infinite_values, 422, "non-finite-values"),
        _case(negative_values, 422, "negative-values"),
        _case(absurd_values, 422, "absurd-values"),
        _case(above_model_range, 422, "above-model-range"),
    )
}
