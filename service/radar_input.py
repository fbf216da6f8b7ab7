"""Read and validate a radar sequence posted as CF-NetCDF bytes (ARCHITECTURE.md, "Input NetCDF").

Every way a file can be unusable ends in a `RadarInputError` whose `detail` says what is wrong and
how to fix it; the API turns it into a problem+json 4xx. The file is untrusted: its header is read
first (`netCDF4`, no data), every declared size is checked against the model's limits, and only
then does xarray decode the few variables needed and load the last `frames_in` frames. A file that
declares billions of cells is refused from its header alone.

Checks, in order: NetCDF signature -> readable -> rain-rate variable -> dtype -> units -> dims ->
declared sizes (frames, grid, chunks) -> time axis (decodable, sorted, unique, regular within 10 %,
an interval of 1-15 min, enough history) -> grid coordinates and pixel size -> values of the frames
used (not all missing, finite, not negative, not absurd) -> coverage of the last frame. Every
problem that still lets the reading go on is collected, and one error lists all of them (a file
that is not NetCDF, unreadable, without a rain variable or dims, or declares too much data stops
at that). The agency's interval and pixel size are brought to the model's by `service.model_grid`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import netCDF4
import numpy as np
import xarray as xr
from xarray.backends.netCDF4_ import NETCDF4_PYTHON_LOCK, NetCDF4DataStore

from models.config import ModelConfig
from models.units import MARSHALL_PALMER_A, MARSHALL_PALMER_B, dbz_to_mm_h
from service import model_grid

logger = logging.getLogger(__name__)

RAIN_RATE_STANDARD_NAME = "lwe_precipitation_rate"
REFLECTIVITY_STANDARD_NAME = "equivalent_reflectivity_factor"

# netCDF-C/HDF5 are not thread-safe, and xarray's own locks do not cover in-memory files: two
# threads parsing or writing at once crash the process (measured: segfaults with 6 threads).
# Every NetCDF read and write of the service holds this lock; the work is tens of milliseconds.
NETCDF_LIBRARY_LOCK = threading.RLock()

# Rates above this are refused as absurd (the wettest radar hours on record are ~300 mm/h).
MAX_RAIN_MM_H = 500.0
# Small negatives come from packing/rounding; set to 0. Anything below this is refused.
NEGATIVE_TOLERANCE_MM_H = 0.01
# Reflectivities above this are not weather (echo from the ground, interference, bad scaling).
MAX_REFLECTIVITY_DBZ = 90.0
# Longest time axis read at all: a day at 2 min is 720 frames; the time coordinate is loaded whole.
MAX_TIME_STEPS = 10_000
# A compressed chunk is decompressed whole to read any part of it: bound the work per read.
MAX_CHUNK_CELLS = 2**25

_NETCDF_SIGNATURES = (b"CDF\x01", b"CDF\x02", b"CDF\x05", b"\x89HDF\r\n\x1a\n")
# An HDF5 superblock may sit after a user block of 512, 1024, 2048, ... bytes.
_HDF5_SIGNATURE_OFFSETS = (0, 512, 1024, 2048, 4096)

# Accepted spellings of rain-rate units -> factor to mm h-1 (compared lower-case, single-spaced).
_RATE_UNITS_TO_MM_H: dict[str, float] = {
    **dict.fromkeys(
        ("mm h-1", "mm/h", "mm hr-1", "mm/hr", "mm h^-1", "mm.h-1", "mm hour-1", "mm/hour"), 1.0
    ),
    **dict.fromkeys(("mm min-1", "mm/min"), 60.0),
    **dict.fromkeys(("mm s-1", "mm/s", "kg m-2 s-1"), 3600.0),
    **dict.fromkeys(("m s-1", "m/s"), 3.6e6),
}
_REFLECTIVITY_UNITS = ("dbz",)

_TIME_NAMES = ("time", "t")
_Y_NAMES = ("y", "lat", "latitude", "rlat", "northing")
_X_NAMES = ("x", "lon", "longitude", "rlon", "easting")
_Y_STANDARD_NAMES = ("projection_y_coordinate", "latitude", "grid_latitude")
_X_STANDARD_NAMES = ("projection_x_coordinate", "longitude", "grid_longitude")


class RadarInputError(Exception):
    """An input file the service cannot use; maps to an HTTP 4xx.

    Attributes
    ----------
    status : int
        HTTP status: 400 (unreadable), 413 (declares too much data), 415 (not NetCDF at all),
        422 (NetCDF, but not a valid radar sequence for this model).
    code : str
        Short slug naming the problem, e.g. ``"wrong-units"``, ``"interval-mismatch"``.
    detail : str
        What is wrong and how to fix it, for the user.

    problems : list of RadarInputError
        Every problem found (just this one, or all of them for a combined error).
    """

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.problems: list[RadarInputError] = [self]

    @classmethod
    def combine(cls, problems: list[RadarInputError]) -> RadarInputError:
        """One error listing every problem: the single one as it is; several as
        code "several-problems", status 413 if any is 413, else that of the first."""
        if len(problems) == 1:
            return problems[0]
        status = 413 if any(p.status == 413 for p in problems) else problems[0].status
        listed = "; ".join(f"({i}) {p.code}: {p.detail}" for i, p in enumerate(problems, 1))
        error = cls(status, "several-problems", f"{len(problems)} problems: {listed}")
        error.problems = list(problems)
        return error


class _Problems:
    """Collects the problems of a file so that one 4xx lists all of them."""

    def __init__(self) -> None:
        self.found: list[RadarInputError] = []

    @contextlib.contextmanager
    def collect(self) -> Iterator[None]:
        """Run a check; record its RadarInputError instead of raising it."""
        try:
            yield
        except RadarInputError as exc:
            self.found.extend(exc.problems)

    def fatal(self, error: RadarInputError) -> RadarInputError:
        """`error` stops the reading: the combined error of it and those found before."""
        return RadarInputError.combine([*self.found, *error.problems])

    def raise_any(self) -> None:
        if self.found:
            raise RadarInputError.combine(self.found)


@dataclass
class RadarInput:
    """A validated radar sequence, ready for the model.

    Attributes
    ----------
    rain_mm_h : np.ndarray
        `(T_in, H, W)` float32: rain rate [mm h-1] on the input's own grid at the model's
        `frames_in` input times (`service.model_grid`: picked or interpolated), oldest first,
        NaN = no coverage. Finite values are >= 0. The model reads `model_rain_mm_h`.
    times : np.ndarray
        `(T_in,)` datetime64[ns]: valid times of those frames (UTC); the last is the file's last.
    interval_s : int
        Time step between those frames [s] (the model's).
    grid : xr.Dataset
        Only the horizontal coordinates (y/x or lat/lon, with their attributes) and, when the file
        has one, the grid-mapping variable with its attributes; copied into the output.
    source_attrs : dict
        Global attributes of the input file (institution, title, ...).
    converted_from_dbz : bool
        True when the file held reflectivity [dBZ], converted with Z = a R^b.
    input_variable : str
        Name of the variable the frames were read from.
    input_units : str
        Its `units` attribute as the file gave it (e.g. "mm h-1", "mm s-1", "dBZ").
    zr_a, zr_b : float or None
        Z-R relation Z = a R^b (Z [mm6 m-3], R [mm h-1]) applied to reflectivity input; None
        when the file held rain rates.
    """

    rain_mm_h: np.ndarray
    times: np.ndarray
    interval_s: int
    grid: xr.Dataset
    source_attrs: dict[str, Any] = field(default_factory=dict)
    converted_from_dbz: bool = False
    input_variable: str = ""
    input_units: str = ""
    zr_a: float | None = None
    zr_b: float | None = None
    input_interval_s: float | None = None
    time_resampling: str = "none"
    pixel_size_m: tuple[float, float] | None = None
    block: tuple[int, int] = (1, 1)

    @property
    def model_rain_mm_h(self) -> np.ndarray:
        """`(T_in, h, w)` float32 [mm h-1] at the model's pixel size: what the pipeline reads
        (block means of `rain_mm_h` over `block` cells; the same array when `block` is 1 x 1)."""
        from models.regrid import block_mean

        return block_mean(self.rain_mm_h, self.block)

    def to_input_grid(self, forecast_mm_h: np.ndarray) -> np.ndarray:
        """`(M, T_out, h, w)` forecast on the model's grid -> `(M, T_out, H, W)` float32 on the
        input's grid (bilinear from the block centres, `models.regrid.upsample`)."""
        from models.regrid import upsample

        return upsample(forecast_mm_h, self.block, self.rain_mm_h.shape[-2:])

    @property
    def processing_attrs(self) -> dict[str, str | float]:
        """Global attributes of the output saying what was done to the input's time steps
        and pixels."""
        attrs: dict[str, str | float] = {"input_time_resampling": self.time_resampling}
        if self.input_interval_s is not None:
            attrs["input_interval_s"] = float(self.input_interval_s)
        if self.pixel_size_m is not None:
            attrs["input_pixel_size_m"] = " ".join(f"{p:.6g}" for p in self.pixel_size_m)
        if self.block == (1, 1):
            attrs["input_regridding"] = "none: the input's pixels are used as they are"
        else:
            attrs["input_regridding"] = (
                f"block means over {self.block[0]} x {self.block[1]} input pixels (rows x "
                "columns) for the model; forecast interpolated back to the input grid "
                "(bilinear between block centres)"
            )
        return attrs

    @property
    def grid_mapping_name(self) -> str | None:
        """Name of the grid-mapping variable in `grid`, or None (e.g. plain lat/lon)."""
        names = list(self.grid.data_vars)
        return str(names[0]) if names else None

    @property
    def dims(self) -> tuple[str, str]:
        """Names of the (row, column) dims, e.g. ``("y", "x")`` or ``("lat", "lon")``."""
        row, column = (str(name) for name in self.grid.coords)
        return row, column


@dataclass(frozen=True)
class _Layout:
    """What the header says: the chosen variable and its (time, row, column) dims."""

    var: str
    is_reflectivity: bool
    to_mm_h: float
    time_dim: str
    y_dim: str
    x_dim: str
    n_time: int
    height: int
    width: int
    grid_mapping: str | None


def read_radar_netcdf(
    data: bytes,
    config: ModelConfig,
    *,
    zr_a: float = MARSHALL_PALMER_A,
    zr_b: float = MARSHALL_PALMER_B,
    max_rain_mm_h: float = MAX_RAIN_MM_H,
    resample: bool = True,
) -> RadarInput:
    """Parse and validate a radar sequence from the bytes of a CF-NetCDF file.

    Parameters
    ----------
    data : bytes
        The whole file (NetCDF-4/HDF5 or NetCDF-3).
    config : ModelConfig
        The model the sequence is for: `frames_in`, `interval_s`, `grid_factor`, `max_grid_px`.
    zr_a, zr_b : float
        Z-R relation Z = a R^b used when the file holds reflectivity in dBZ (default
        Marshall-Palmer, a = 200, b = 1.6).
    max_rain_mm_h : float
        Rain rates above this [mm h-1] are refused as absurd; converted reflectivity is capped here
        instead (hail cores are real, their Z-R rain rate is not).
    resample : bool
        Bring the frames onto the model's times (motion-compensated interpolation where no frame
        is on time: seconds of CPU at 512 px). False only validates, as the API does: every
        check runs, and `rain_mm_h` holds the nearest frame to each model time instead.

    Returns
    -------
    RadarInput
        The last `config.frames_in` frames as `(T_in, H, W)` float32 [mm h-1], NaN = no coverage.

    Raises
    ------
    RadarInputError
        Whenever the file is not a valid input; `.status`, `.code` and `.detail` say why.
    """
    data = bytes(data)
    _check_signature(data)
    with NETCDF_LIBRARY_LOCK:
        return _read_validated(
            data,
            config,
            zr_a=zr_a,
            zr_b=zr_b,
            max_rain_mm_h=max_rain_mm_h,
            resample=resample,
        )


def _read_validated(
    data: bytes,
    config: ModelConfig,
    *,
    zr_a: float,
    zr_b: float,
    max_rain_mm_h: float,
    resample: bool = True,
) -> RadarInput:
    nc = _open_in_memory(data)
    problems = _Problems()
    try:
        with _read_errors_as_unreadable(len(data)):
            with NETCDF4_PYTHON_LOCK:
                layout = _inspect_header(nc, config, problems)
            ds = _open_with_xarray(nc, layout)
            times, plan = _check_time_axis(ds, layout, config, problems)
            grid, pixel_m, block = _grid_of(ds, layout, config, problems)
            # the frames the model's input times come from (or, when the times are unusable,
            # the last frames, so that their values are checked too)
            sources = (
                plan.sources if plan else list(range(-min(config.frames_in, layout.n_time), 0))
            )
            frames = ds[layout.var].isel({layout.time_dim: sources})
            # the only bulk read: at most ~31 frames of H x W, bounded by the header checks
            values = np.asarray(frames.values, dtype=np.float64)
        # values in units that were not understood would be judged wrongly: not checked then
        if any(p.code == "wrong-units" for p in problems.found):
            problems.raise_any()
        with problems.collect():
            rain_mm_h = _rain_rate_of(
                values,
                layout,
                zr_a=zr_a,
                zr_b=zr_b,
                max_mm_h=max_rain_mm_h,
                model_max_mm_h=config.rain_max_mm_h,
            )
            _check_coverage(rain_mm_h[-1], layout.var)
        problems.raise_any()
        source_attrs = {str(k): _plain(v) for k, v in ds.attrs.items()}
        input_units = str(ds[layout.var].attrs.get("units", ""))
    finally:
        with NETCDF4_PYTHON_LOCK:
            nc.close()
    assert plan is not None  # no problems: the times were usable
    if resample:
        rain_mm_h, resampling = _on_model_times(rain_mm_h, times, plan, config)
    else:
        rain_mm_h, resampling = _nearest_frames(rain_mm_h, times, plan), "not done (validated only)"
    return RadarInput(
        rain_mm_h=rain_mm_h,
        times=plan.targets,
        interval_s=config.interval_s,
        grid=grid,
        source_attrs=source_attrs,
        converted_from_dbz=layout.is_reflectivity,
        input_variable=layout.var,
        input_units=input_units,
        zr_a=float(zr_a) if layout.is_reflectivity else None,
        zr_b=float(zr_b) if layout.is_reflectivity else None,
        input_interval_s=plan.input_interval_s,
        time_resampling=resampling,
        pixel_size_m=pixel_m,
        block=block,
    )


def _on_model_times(
    rain_mm_h: np.ndarray, times: np.ndarray, plan: model_grid.TimePlan, config: ModelConfig
) -> tuple[np.ndarray, str]:
    """The frames read (`plan.sources`) -> `(frames_in, H, W)` at `plan.targets`, and what
    was done (for the output's attributes)."""
    from models.interpolation import resample_frames

    def seconds(t: np.ndarray) -> np.ndarray:
        return (t - times[-1]).astype("timedelta64[ms]").astype(np.float64) / 1000.0

    resampled = resample_frames(
        rain_mm_h, seconds(times[plan.sources]), seconds(plan.targets), plan.tolerance_s
    )
    interpolated = int(resampled.interpolated.sum())
    return resampled.rain_mm_h, plan.description(interpolated, config.interval_s)


def _nearest_frames(
    rain_mm_h: np.ndarray, times: np.ndarray, plan: model_grid.TimePlan
) -> np.ndarray:
    """The frame read nearest to each of `plan.targets`: `(frames_in, H, W)`, a cheap stand-in
    for the resampled frames when only validating."""
    read = times[plan.sources]
    nearest = [int(np.argmin(np.abs(read - target))) for target in plan.targets]
    return rain_mm_h[nearest]


def _check_coverage(last_mm_h: np.ndarray, name: str) -> None:
    """Refuse a last frame (`(H, W)`, NaN = no coverage) with (almost) no coverage: the forecast
    starts from it, and would be missing (or rest on a few pixels) everywhere."""
    covered = float(np.mean(~np.isnan(last_mm_h)))
    if covered < model_grid.MIN_COVERAGE_FRACTION:
        raise RadarInputError(
            422,
            "no-coverage",
            f"the last frame of {name!r} has radar coverage on {covered:.2%} of its pixels "
            f"(at least {model_grid.MIN_COVERAGE_FRACTION:.0%} needed): the forecast starts "
            "from it; send a sequence whose last frame has data (check its _FillValue)",
        )


# ---------------------------------------------------------------------------- file and header


def _check_signature(data: bytes) -> None:
    if not data:
        raise RadarInputError(
            400, "empty-file", "the uploaded file is empty (0 bytes); send the radar NetCDF file"
        )
    if data.startswith(_NETCDF_SIGNATURES[:3]):
        return
    if any(data[o : o + 8] == _NETCDF_SIGNATURES[3] for o in _HDF5_SIGNATURE_OFFSETS):
        return
    raise RadarInputError(
        415,
        "not-netcdf",
        f"the file is not NetCDF (it starts with {data[:16]!r}); send a NetCDF-4 or NetCDF-3 "
        "file (media type application/x-netcdf), e.g. written by xarray's to_netcdf",
    )


def _unreadable(exc: BaseException, size: int) -> RadarInputError:
    return RadarInputError(
        400,
        "unreadable-netcdf",
        f"the file starts like NetCDF but cannot be read ({_short(exc)}); it is probably "
        f"truncated or corrupt ({size} bytes received): check that the whole file was uploaded "
        "and that it opens with ncdump or xarray",
    )


def _open_in_memory(data: bytes) -> netCDF4.Dataset:
    try:
        with NETCDF4_PYTHON_LOCK:
            return netCDF4.Dataset("radar-input.nc", mode="r", memory=data)
    except Exception as exc:  # the C library reports corruption as OSError or RuntimeError
        raise _unreadable(exc, len(data)) from None


@contextlib.contextmanager
def _read_errors_as_unreadable(size: int) -> Iterator[None]:
    """Turn any failure to read a corrupt file into a 400, never a 5xx.

    The C library reports a header that promises data the file lacks, or a damaged attribute, as
    OSError, RuntimeError or AttributeError, and xarray may wrap them: past the signature check,
    every exception that is not already a RadarInputError is the file's fault.
    """
    try:
        yield
    except RadarInputError:
        raise
    except Exception as exc:
        logger.info("unreadable radar input: %s", _short(exc))
        raise _unreadable(exc, size) from None


def _inspect_header(nc: netCDF4.Dataset, config: ModelConfig, problems: _Problems) -> _Layout:
    """Choose the rain variable and check everything the header alone can tell. Reads no data.

    Problems that still let the reading go on are collected in `problems`; a file whose
    variable or dims cannot be found, or that declares too much data, stops here."""
    var_name, is_reflectivity = _find_rain_variable(nc)
    var = nc.variables[var_name]
    try:
        _check_dtype(var)  # values of another type cannot even be read
    except RadarInputError as exc:
        raise problems.fatal(exc) from None
    to_mm_h = 1.0
    with problems.collect():
        to_mm_h = _check_units(var, is_reflectivity)
    try:
        time_dim, y_dim, x_dim = _check_dims(nc, var)
    except RadarInputError as exc:
        raise problems.fatal(exc) from None
    n_time, height, width = (len(nc.dimensions[d]) for d in (time_dim, y_dim, x_dim))
    _check_declared_sizes(var, n_time, height, width, config, problems)
    if any(p.status == 413 for p in problems.found):
        problems.raise_any()  # nothing more is read from a file that declares too much
    grid_mapping = getattr(var, "grid_mapping", None)
    if not isinstance(grid_mapping, str) or grid_mapping not in nc.variables:
        # A dangling reference would make the output fail CF checks; drop it rather than refuse.
        grid_mapping = None
    elif nc.variables[grid_mapping].ndim != 0 or nc.variables[grid_mapping].dtype == str:
        grid_mapping = None
    return _Layout(
        var=var_name,
        is_reflectivity=is_reflectivity,
        to_mm_h=to_mm_h,
        time_dim=time_dim,
        y_dim=y_dim,
        x_dim=x_dim,
        n_time=n_time,
        height=height,
        width=width,
        grid_mapping=grid_mapping,
    )


def _find_rain_variable(nc: netCDF4.Dataset) -> tuple[str, bool]:
    rates, reflectivities = [], []
    for name, var in nc.variables.items():
        standard_name = str(getattr(var, "standard_name", "")).strip()
        if standard_name == RAIN_RATE_STANDARD_NAME:
            rates.append(name)
        elif standard_name == REFLECTIVITY_STANDARD_NAME:
            reflectivities.append(name)
    if len(rates) > 1 or (not rates and len(reflectivities) > 1):
        found = rates if len(rates) > 1 else reflectivities
        raise RadarInputError(
            422,
            "ambiguous-rain-variable",
            f"several variables could be the radar input ({', '.join(found)}); send exactly one "
            f"variable with standard_name = {RAIN_RATE_STANDARD_NAME} (or "
            f"{REFLECTIVITY_STANDARD_NAME})",
        )
    if rates:
        return rates[0], False
    if reflectivities:
        return reflectivities[0], True
    raise RadarInputError(422, "no-rain-variable", _no_rain_variable_detail(nc))


def _no_rain_variable_detail(nc: netCDF4.Dataset) -> str:
    described = []
    hint = ""
    for name, var in list(nc.variables.items())[:20]:
        units = getattr(var, "units", None)
        standard_name = getattr(var, "standard_name", None)
        described.append(f"{name}{tuple(var.dimensions)} standard_name={standard_name!r}")
        if not hint and var.ndim == 3 and units is not None and standard_name is None:
            hint = (
                f"; variable {name!r} (units {units!r}) has no standard_name: if it is the rain "
                f'rate, set its standard_name = "{RAIN_RATE_STANDARD_NAME}"'
            )
    found = ", ".join(described) if described else "no variables at all"
    return (
        f"no variable has standard_name = {RAIN_RATE_STANDARD_NAME} (rain rate in mm h-1) or "
        f"{REFLECTIVITY_STANDARD_NAME} (reflectivity in dBZ); found: {found}{hint}"
    )


def _check_dtype(var: netCDF4.Variable) -> None:
    dtype = var.dtype
    kind = _dtype_kind(dtype)
    packed = hasattr(var, "scale_factor")
    if kind == "f" or (kind in "iu" and packed):
        return
    if kind in "iu":
        problem = f"is an integer type ({np.dtype(dtype).name}) without scale_factor"
    else:
        problem = f"has type {getattr(dtype, '__name__', dtype)!s}, which is not numeric"
    raise RadarInputError(
        422,
        "wrong-dtype",
        f"variable {var.name!r} {problem}; store the rain rate as float32 (or pack it as "
        "integers with scale_factor/add_offset)",
    )


def _normalise_units(units: str) -> str:
    return " ".join(units.strip().lower().split())


def _check_units(var: netCDF4.Variable, is_reflectivity: bool) -> float:
    units = getattr(var, "units", None)
    if is_reflectivity:
        if isinstance(units, str) and _normalise_units(units) in _REFLECTIVITY_UNITS:
            return 1.0
        expected = 'reflectivity in "dBZ"'
    else:
        if isinstance(units, str) and _normalise_units(units) in _RATE_UNITS_TO_MM_H:
            return _RATE_UNITS_TO_MM_H[_normalise_units(units)]
        expected = 'a rain rate in "mm h-1" (also accepted: mm/h, mm hr-1, mm s-1, m s-1)'
    found = "no units attribute" if units is None else f"units {units!r}"
    raise RadarInputError(
        422,
        "wrong-units",
        f"variable {var.name!r} ({var.standard_name}) has {found}; expected {expected}: convert "
        "the data and set the units attribute accordingly",
    )


def _axis_of(nc: netCDF4.Dataset, dim: str) -> str | None:
    """'T', 'Y', 'X' or None for a dimension, from its coordinate variable's attributes."""
    coord = nc.variables.get(dim)
    attrs = {k: str(getattr(coord, k, "")) for k in ("standard_name", "axis", "units")}
    name = dim.lower()
    if name in _TIME_NAMES or attrs["standard_name"] == "time" or attrs["axis"] == "T":
        return "T"
    if name in _Y_NAMES or attrs["standard_name"] in _Y_STANDARD_NAMES or attrs["axis"] == "Y":
        return "Y"
    if name in _X_NAMES or attrs["standard_name"] in _X_STANDARD_NAMES or attrs["axis"] == "X":
        return "X"
    return None


def _check_dims(nc: netCDF4.Dataset, var: netCDF4.Variable) -> tuple[str, str, str]:
    dims = tuple(var.dimensions)
    axes = tuple(_axis_of(nc, d) for d in dims)
    if axes != ("T", "Y", "X"):
        raise RadarInputError(
            422,
            "wrong-dims",
            f"variable {var.name!r} has dims {dims}; need (time, y, x) or (time, lat, lon), in "
            "that order, with a 1-D coordinate variable for each (CF: time with units "
            '"seconds since ...", y/x with standard_name projection_y/x_coordinate or '
            "latitude/longitude); drop or squeeze other dims and transpose",
        )
    for dim in dims:
        coord = nc.variables.get(dim)
        if coord is None or tuple(coord.dimensions) != (dim,):
            raise RadarInputError(
                422,
                "missing-coordinates",
                f"dimension {dim!r} of {var.name!r} has no 1-D coordinate variable {dim!r}; add "
                "the time stamps (CF units such as 'seconds since 1970-01-01') and the y/x "
                "(or lat/lon) cell centres",
            )
        if _dtype_kind(coord.dtype) not in "iuf":
            raise RadarInputError(
                422,
                "missing-coordinates",
                f"coordinate variable {dim!r} is not numeric ({coord.dtype}); store it as "
                "numbers (time as CF 'seconds since ...')",
            )
    return dims  # type: ignore[return-value]


def _check_declared_sizes(
    var: netCDF4.Variable,
    n_time: int,
    height: int,
    width: int,
    config: ModelConfig,
    problems: _Problems,
) -> None:
    if n_time > MAX_TIME_STEPS:
        problems.found.append(
            RadarInputError(
                413,
                "too-many-frames",
                f"variable {var.name!r} declares {n_time:,} time steps (at most "
                f"{MAX_TIME_STEPS:,} are read); send only the last frames: the model uses the "
                f"last {(config.frames_in - 1) * config.interval_s / 60:g} min",
            )
        )
    with problems.collect():
        _check_grid(var.name, height, width, config)
    chunking = var.chunking()
    if chunking != "contiguous" and chunking is not None:
        chunk_cells = math.prod(int(c) for c in chunking)
        if chunk_cells > MAX_CHUNK_CELLS:
            problems.found.append(
                RadarInputError(
                    413,
                    "chunks-too-large",
                    f"variable {var.name!r} is stored in chunks of {tuple(chunking)} = "
                    f"{chunk_cells:,} cells, each decompressed whole to read it (limit "
                    f"{MAX_CHUNK_CELLS:,}); write it with one frame per chunk, e.g. "
                    f"chunksizes=(1, {height}, {width})",
                )
            )
    if n_time < 2:
        # the history the model needs is checked on the decoded times (model_grid.plan_times)
        problems.found.append(
            RadarInputError(
                422,
                "too-few-frames",
                f"variable {var.name!r} has {n_time} time step(s); model {config.name!r} needs "
                f"{(config.frames_in - 1) * config.interval_s / 60:g} min of frames (e.g. "
                f"{config.frames_in} at {config.interval_s / 60:g} min): send a longer sequence",
            )
        )


def _check_grid(var_name: str, height: int, width: int, config: ModelConfig) -> None:
    """Refuse grids above the largest accepted side (`ModelConfig.check_grid`) with a 413:
    nothing of such a file is read. Any smaller size is taken (padded and tiled)."""
    try:
        config.check_grid(height, width)
    except ValueError as exc:
        raise RadarInputError(
            413,
            "grid-too-large",
            f"variable {var_name!r} has a grid of {height} x {width} px (rows x columns): "
            f"{exc} (model {config.name!r} takes composites of up to {config.max_domain_px} x "
            f"{config.max_domain_px} px, any size below that)",
        ) from None


# ---------------------------------------------------------------------------- decoded content


def _open_with_xarray(nc: netCDF4.Dataset, layout: _Layout) -> xr.Dataset:
    keep = {layout.var, layout.time_dim, layout.y_dim, layout.x_dim}
    if layout.grid_mapping:
        keep.add(layout.grid_mapping)
    with NETCDF4_PYTHON_LOCK:
        drop = [name for name in nc.variables if name not in keep]
    try:
        # Only the kept variables are decoded; their index coordinates are loaded here, which is
        # safe: their lengths were bounded from the header.
        return xr.open_dataset(
            NetCDF4DataStore(nc),
            drop_variables=drop,
            decode_times=True,
            decode_timedelta=False,
            mask_and_scale=True,
            cache=False,
        )
    except (ValueError, OverflowError) as exc:  # CF decoding: out-of-range or unparsable dates
        time_units = getattr(nc.variables[layout.time_dim], "units", None)
        raise RadarInputError(
            422,
            "bad-time-units",
            f"the file's variables cannot be decoded ({_short(exc)}); check the time "
            f"coordinate {layout.time_dim!r} (units {time_units!r}): it needs CF units such as "
            "'seconds since 1970-01-01 00:00:00' and a standard calendar",
        ) from None


def _check_time_axis(
    ds: xr.Dataset, layout: _Layout, config: ModelConfig, problems: _Problems
) -> tuple[np.ndarray, model_grid.TimePlan | None]:
    """`(T,)` datetime64[ns] times of the whole file, and how the model's input times come
    from them (None, with the problem in `problems`, when they cannot)."""
    with problems.collect():
        times = _decoded_times(ds, layout)
        try:
            return times, model_grid.plan_times(times, config)
        except model_grid.GridProblem as exc:
            raise RadarInputError(422, exc.code, exc.detail) from None
    times = ds[layout.time_dim].values
    return (times if np.issubdtype(times.dtype, np.datetime64) else np.array([])), None


def _decoded_times(ds: xr.Dataset, layout: _Layout) -> np.ndarray:
    """Validated `(T,)` datetime64[ns] times: decoded, present, unique, increasing."""
    time = ds[layout.time_dim]
    if not np.issubdtype(time.dtype, np.datetime64):
        raise RadarInputError(
            422,
            "bad-time-units",
            f"time coordinate {layout.time_dim!r} has units {time.attrs.get('units')!r} and was "
            "not decoded as dates; use CF units such as 'seconds since 1970-01-01 00:00:00' "
            "(calendar standard)",
        )
    times = time.values.astype("datetime64[ns]")
    if np.isnat(times).any():
        raise RadarInputError(
            422,
            "missing-times",
            f"time coordinate {layout.time_dim!r} has missing values; give every frame its time",
        )
    steps_s = np.diff(times).astype("timedelta64[s]").astype(np.int64)
    listed = [str(t)[:19] for t in times]
    if (steps_s == 0).any():
        i = int(np.flatnonzero(steps_s == 0)[0])
        raise RadarInputError(
            422,
            "duplicate-times",
            f"time {listed[i]} occurs more than once (frames {i} and {i + 1}); send each frame "
            "once, oldest first",
        )
    if (steps_s < 0).any():
        i = int(np.flatnonzero(steps_s < 0)[0])
        raise RadarInputError(
            422,
            "unsorted-times",
            f"times are not in increasing order (frame {i} at {listed[i]} is followed by "
            f"{listed[i + 1]}); sort the frames by time, oldest first",
        )
    return times


def _grid_of(
    ds: xr.Dataset, layout: _Layout, config: ModelConfig, problems: _Problems
) -> tuple[xr.Dataset, tuple[float, float] | None, tuple[int, int]]:
    """The input's grid (coordinates and grid mapping), its (row, column) pixel size [m] and
    the blocks that bring it to the model's pixel (`service.model_grid`)."""
    grid = xr.Dataset()
    with problems.collect():
        grid = _grid_coordinates(ds, layout)
        try:
            pixel_m = model_grid.pixel_sizes_m(grid, (layout.y_dim, layout.x_dim))
            return grid, pixel_m, model_grid.block_factor(pixel_m, config)
        except model_grid.GridProblem as exc:
            raise RadarInputError(422, exc.code, exc.detail) from None
    return grid, None, (1, 1)


def _grid_coordinates(ds: xr.Dataset, layout: _Layout) -> xr.Dataset:
    coords = {}
    for dim in (layout.y_dim, layout.x_dim):
        values = ds[dim].values
        steps = np.diff(values.astype(np.float64))
        if not np.isfinite(values).all() or not ((steps > 0).all() or (steps < 0).all()):
            raise RadarInputError(
                422,
                "bad-coordinates",
                f"coordinate {dim!r} is not finite and strictly monotonic; give the cell centres "
                "of a regular grid, in order",
            )
        coords[dim] = xr.Variable((dim,), values, attrs=_clean_attrs(ds[dim].attrs))
    grid = xr.Dataset(coords=coords)
    if layout.grid_mapping:
        mapping = ds[layout.grid_mapping]
        grid[layout.grid_mapping] = xr.Variable((), mapping.values, _clean_attrs(mapping.attrs))
    return grid


def _rain_rate_of(
    values: np.ndarray,
    layout: _Layout,
    *,
    zr_a: float,
    zr_b: float,
    max_mm_h: float,
    model_max_mm_h: float = np.inf,
) -> np.ndarray:
    """`(T_in, H, W)` float32 rain rate [mm h-1] from the decoded frames (NaN = no coverage).

    Rain rates sent as such above `model_max_mm_h` (the model's `rain_max_mm_h`, the top of the
    range it was trained on) are refused with a 422 that names it, rather than clipped: clipping
    would change the forecast without the client knowing. Converted reflectivity keeps its cap.
    """
    name = layout.var
    if np.isnan(values).all():
        raise RadarInputError(
            422,
            "all-missing",
            f"every value of {name!r} in the last {values.shape[0]} frames is missing "
            "(_FillValue/NaN): no radar coverage to forecast from; check the _FillValue and the "
            "frames sent",
        )
    if np.isinf(values).any():
        count = int(np.isinf(values).sum())
        raise RadarInputError(
            422,
            "non-finite-values",
            f"{name!r} has {count} infinite value(s) in the frames used; mark pixels without "
            "coverage with _FillValue (or NaN) instead",
        )
    if layout.is_reflectivity:
        top = float(np.nanmax(values))
        if top > MAX_REFLECTIVITY_DBZ:
            raise RadarInputError(
                422,
                "absurd-values",
                f"{name!r} reaches {top:.1f} dBZ, above {MAX_REFLECTIVITY_DBZ:.0f} dBZ; check "
                "the scaling (scale_factor/add_offset) and the units",
            )
        # Z-R: capped at max_mm_h (hail cores give huge Z-R rates that are not rain).
        rain = np.minimum(dbz_to_mm_h(values, a=zr_a, b=zr_b).astype(np.float64), max_mm_h)
    else:
        rain = values * layout.to_mm_h
        low = float(np.nanmin(rain))
        if low < -NEGATIVE_TOLERANCE_MM_H:
            count = int((rain < -NEGATIVE_TOLERANCE_MM_H).sum())
            raise RadarInputError(
                422,
                "negative-values",
                f"{name!r} has {count} negative value(s) (down to {low:.3g} mm h-1); rain rates "
                "are >= 0: mark missing pixels with _FillValue, not negative numbers",
            )
        top = float(np.nanmax(rain))
        if top > max_mm_h:
            count = int((rain > max_mm_h).sum())
            raise RadarInputError(
                422,
                "absurd-values",
                f"{name!r} has {count} value(s) above {max_mm_h:g} mm h-1 (up to {top:.4g}); "
                "check the units and scaling (mm h-1 expected, not mm per interval or "
                "reflectivity) and mask clutter",
            )
        if top > model_max_mm_h:
            count = int((rain > model_max_mm_h).sum())
            raise RadarInputError(
                422,
                "above-model-range",
                f"{name!r} has {count} value(s) above {model_max_mm_h:g} mm h-1 (up to "
                f"{top:.4g}), the top of the model's range (rain_max_mm_h); the model was not "
                f"trained on such rates: cap the input at {model_max_mm_h:g} mm h-1 or mask those "
                "pixels",
            )
        rain = np.maximum(rain, 0.0, where=~np.isnan(rain), out=rain)
    return rain.astype(np.float32)


# ---------------------------------------------------------------------------- helpers


def _dtype_kind(dtype: Any) -> str:
    """NumPy kind letter of a netCDF4 variable's dtype ('O' for strings and user types)."""
    try:
        return np.dtype(dtype).kind if dtype is not str else "O"
    except TypeError:
        return "O"


def _clean_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    # CF encoding attributes must not be copied as plain attributes into a new file.
    skip = {"_FillValue", "missing_value", "scale_factor", "add_offset", "units_metadata"}
    return {k: _plain(v) for k, v in attrs.items() if k not in skip}


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist() if value.ndim else value.item()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _short(exc: BaseException, limit: int = 200) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
