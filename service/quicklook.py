"""Quick-look PNGs of a forecast file: a frame strip over the lead times of one product.

`read_quicklook_frames` finds the product in the forecast NetCDF by what the variables are, not by
their names: the members by their `realization` dimension, the ensemble mean by `cell_methods`
(`realization: mean`) or a name that says mean, the exceedance probabilities by a probability
variable with a threshold dimension. So files written with CF/IMPROVER-style names
(`probability_of_lwe_precipitation_rate_above_threshold`) read the same as the older ones.
`render_frame_strip` draws the frames side by side with one colour bar (matplotlib, Agg).
"""

from __future__ import annotations

import io
import math
import threading
import warnings
from dataclasses import dataclass
from typing import Literal

import netCDF4
import numpy as np
import xarray as xr
from xarray.backends.netCDF4_ import NETCDF4_PYTHON_LOCK, NetCDF4DataStore

from service.radar_input import NETCDF_LIBRARY_LOCK

Product = Literal["mean", "member", "probability"]
PRODUCTS: tuple[Product, ...] = ("mean", "member", "probability")

# rain-rate colour scale: log from drizzle to cloudburst; below the first level is "no rain"
RATE_MIN_MM_H = 0.1
RATE_MAX_MM_H = 100.0
RATE_TICKS_MM_H = (0.1, 0.3, 1, 3, 10, 30, 100)
# the default probability map: the lowest threshold at or above this rate
DEFAULT_THRESHOLD_MM_H = 1.0
# unit spellings of rain rate -> factor to mm h-1 (thresholds may be stored in SI, as IMPROVER does)
_RATE_UNITS_TO_MM_H = {
    "mm h-1": 1.0,
    "mm/h": 1.0,
    "mm hr-1": 1.0,
    "mm h**-1": 1.0,
    "m s-1": 3.6e6,
    "m/s": 3.6e6,
}
_NO_COVERAGE_COLOUR = "#d9d9d9"
# matplotlib's global state (font cache, colormap registry) is not thread-safe, and the API
# renders in a thread pool; one strip takes ~0.2 s, so serialising them costs little
_MATPLOTLIB_LOCK = threading.Lock()


class QuicklookError(Exception):
    """The forecast file does not hold what was asked for; `.status`, `.code`, `.detail` say why."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class QuicklookFrames:
    """One product over the lead times, ready to draw.

    values : `(T, H, W)` float32; rain rate [mm h-1] or probability [0-1], NaN = no coverage.
    """

    values: np.ndarray
    lead_labels: tuple[str, ...]
    title: str
    kind: Literal["rate", "probability"]
    origin_lower: bool  # the first row is the southernmost (y or latitude increases downwards)


def quicklook_png(
    result: bytes,
    product: Product,
    *,
    member: int = 0,
    threshold_mm_h: float | None = None,
) -> bytes:
    """PNG frame strip of one product of a forecast file (see `read_quicklook_frames`)."""
    frames = read_quicklook_frames(result, product, member=member, threshold_mm_h=threshold_mm_h)
    return render_frame_strip(frames)


def read_quicklook_frames(
    result: bytes,
    product: Product,
    *,
    member: int = 0,
    threshold_mm_h: float | None = None,
) -> QuicklookFrames:
    """Read one product of a forecast NetCDF file.

    Parameters
    ----------
    result : bytes
        The forecast file as the service stores it.
    product : {"mean", "member", "probability"}
        Ensemble mean, one member, or the probability of exceeding a threshold.
    member : int
        Index along `realization` for "member".
    threshold_mm_h : float, optional
        Threshold [mm h-1] for "probability"; default: the lowest at or above 1 mm h-1 (else the
        highest).

    Raises
    ------
    QuicklookError
        The file lacks the product (404) or the member/threshold is not in it (422).
    """
    with NETCDF_LIBRARY_LOCK:
        with NETCDF4_PYTHON_LOCK:
            nc = netCDF4.Dataset("forecast.nc", mode="r", memory=bytes(result))
        try:
            ds = xr.open_dataset(NetCDF4DataStore(nc), decode_timedelta=True)
            if product == "member":
                return _member_frames(ds, member)
            if product == "mean":
                return _mean_frames(ds)
            if product == "probability":
                return _probability_frames(ds, threshold_mm_h)
            raise QuicklookError(
                422, "unknown-product", f"product {product!r} is not one of {PRODUCTS}"
            )
        finally:
            with NETCDF4_PYTHON_LOCK:
                nc.close()


# ------------------------------------------------------------------------------ finding variables


def _rate_factor(var: xr.DataArray) -> float | None:
    units = " ".join(str(var.attrs.get("units", "")).split()).lower()
    return _RATE_UNITS_TO_MM_H.get(units)


def _coord_standard_name(ds: xr.Dataset, dim: str) -> str:
    return str(ds[dim].attrs.get("standard_name", "")) if dim in ds.variables else ""


def _time_dim(ds: xr.Dataset, var: xr.DataArray) -> str | None:
    for dim in var.dims:
        if dim == "time" or _coord_standard_name(ds, str(dim)) == "time":
            return str(dim)
        if dim in ds.variables and ds[dim].attrs.get("axis") == "T":
            return str(dim)
    return None


def _realization_dim(ds: xr.Dataset, var: xr.DataArray) -> str | None:
    for dim in var.dims:
        if dim == "realization" or _coord_standard_name(ds, str(dim)) == "realization":
            return str(dim)
    return None


def _grids(ds: xr.Dataset) -> list[tuple[str, xr.DataArray, str]]:
    """(name, variable, time dim) of every variable on (..., time, row, col)."""
    found = []
    for name, var in ds.data_vars.items():
        time_dim = _time_dim(ds, var) if var.ndim >= 3 else None
        if time_dim is not None and var.dims.index(time_dim) == var.ndim - 3:
            found.append((str(name), var, time_dim))
    return found


def _says_mean(name: str, var: xr.DataArray) -> bool:
    cell_methods = str(var.attrs.get("cell_methods", "")).replace(" ", "")
    if "realization:mean" in cell_methods:
        return True
    words = f"{name} {var.attrs.get('long_name', '')}".lower()
    return "mean" in words and "percentile" not in words


def _says_probability(name: str, var: xr.DataArray) -> bool:
    text = f"{name} {var.attrs.get('standard_name', '')} {var.attrs.get('long_name', '')}".lower()
    return "probability" in text or "exceedance" in text


def _member_variable(ds: xr.Dataset) -> tuple[xr.DataArray, str, str] | None:
    """(rain-rate variable, realization dim, time dim) of the members, if the file has them."""
    for _name, var, time_dim in _grids(ds):
        realization = _realization_dim(ds, var)
        if realization is not None and var.ndim == 4 and _rate_factor(var) is not None:
            return var, realization, time_dim
    return None


def _member_frames(ds: xr.Dataset, member: int) -> QuicklookFrames:
    found = _member_variable(ds)
    if found is None:
        raise _missing("members", "members")
    var, realization, time_dim = found
    count = ds.sizes[realization]
    if not 0 <= member < count:
        raise QuicklookError(
            422,
            "member-out-of-range",
            f"member {member} is not in this forecast; it has members 0-{count - 1}",
        )
    values = var.isel({realization: member}).values * _rate_factor(var)
    return _frames(ds, var, time_dim, values, f"member {member}", "rate")


def _mean_frames(ds: xr.Dataset) -> QuicklookFrames:
    for name, var, time_dim in _grids(ds):
        if var.ndim == 3 and _rate_factor(var) is not None and _says_mean(name, var):
            values = var.values * _rate_factor(var)
            return _frames(ds, var, time_dim, values, "ensemble mean", "rate")
    # a file without the mean product still has its members: average those
    found = _member_variable(ds)
    if found is None:
        raise _missing("the ensemble mean", "mean")
    var, realization, time_dim = found
    members = var.values * _rate_factor(var)
    with warnings.catch_warnings():
        # pixels without coverage are NaN in every member and stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        values = np.nanmean(members, axis=var.dims.index(realization))
    title = f"ensemble mean of {ds.sizes[realization]} members"
    return _frames(ds, var.isel({realization: 0}), time_dim, values, title, "rate")


def _probability_frames(ds: xr.Dataset, threshold_mm_h: float | None) -> QuicklookFrames:
    for name, var, time_dim in _grids(ds):
        if var.ndim != 4 or not _says_probability(name, var) or _rate_factor(var) is not None:
            continue
        threshold_dim = str(var.dims[0])
        if threshold_dim not in ds.variables:
            continue
        factor = _rate_factor(ds[threshold_dim]) or 1.0
        thresholds = np.asarray(ds[threshold_dim].values, dtype=np.float64) * factor
        index = _threshold_index(thresholds, threshold_mm_h)
        relation = _relation(ds[threshold_dim])
        title = f"probability of rain rate {relation} {thresholds[index]:g} mm h-1"
        values = var.isel({threshold_dim: index}).values
        return _frames(ds, var, time_dim, values, title, "probability")
    raise _missing("exceedance probabilities", "exceedance")


def _threshold_index(thresholds: np.ndarray, wanted_mm_h: float | None) -> int:
    if wanted_mm_h is None:
        above = np.flatnonzero(thresholds >= DEFAULT_THRESHOLD_MM_H - 1e-6)
        return (
            int(above[np.argmin(thresholds[above])]) if above.size else int(np.argmax(thresholds))
        )
    close = np.flatnonzero(np.isclose(thresholds, wanted_mm_h, rtol=1e-4, atol=1e-6))
    if close.size == 0:
        have = ", ".join(f"{t:g}" for t in thresholds)
        raise QuicklookError(
            422,
            "threshold-not-in-forecast",
            f"threshold {wanted_mm_h:g} mm h-1 is not in this forecast; it has {have} mm h-1",
        )
    return int(close[0])


def _relation(threshold: xr.DataArray) -> str:
    # IMPROVER's attribute; without it the service's probabilities are "above" (strictly greater)
    relation = str(threshold.attrs.get("spp__relative_to_threshold", "")).lower()
    if relation in ("greater_than_or_equal_to", "greater_than_or_equal"):
        return "≥"
    return ">"


def _missing(what: str, product: str) -> QuicklookError:
    return QuicklookError(
        404,
        "product-not-in-forecast",
        f"this forecast has no {what}; submit the job again with `{product}` in `products`",
    )


def _frames(
    ds: xr.Dataset,
    var: xr.DataArray,
    time_dim: str,
    values: np.ndarray,
    title: str,
    kind: Literal["rate", "probability"],
) -> QuicklookFrames:
    row_dim = str(var.dims[-2])
    rows = np.asarray(ds[row_dim].values) if row_dim in ds.variables else np.arange(2)
    origin_lower = rows.size > 1 and bool(rows[-1] > rows[0])
    return QuicklookFrames(
        values=np.asarray(values, dtype=np.float32),
        lead_labels=_lead_labels(ds, time_dim),
        title=title,
        kind=kind,
        origin_lower=origin_lower,
    )


def _lead_labels(ds: xr.Dataset, time_dim: str) -> tuple[str, ...]:
    """ "+5 min", ... from `forecast_period`, else from valid minus reference time."""
    count = ds.sizes[time_dim]
    minutes: np.ndarray | None = None
    for coord in ds.coords.values():
        if coord.attrs.get("standard_name") == "forecast_period" and coord.dims == (time_dim,):
            period = np.asarray(coord.values)
            if np.issubdtype(period.dtype, np.timedelta64):
                minutes = period / np.timedelta64(1, "m")
            elif str(coord.attrs.get("units", "")).strip() in ("s", "seconds"):
                minutes = period.astype(np.float64) / 60
            break
    if minutes is None:
        reference = next(
            (
                c
                for c in ds.variables.values()
                if c.attrs.get("standard_name") == "forecast_reference_time" and c.ndim == 0
            ),
            None,
        )
        times = ds[time_dim].values if time_dim in ds.variables else None
        if (
            reference is not None
            and times is not None
            and np.issubdtype(times.dtype, np.datetime64)
        ):
            minutes = (times - reference.values) / np.timedelta64(1, "m")
    if minutes is None:
        return tuple(f"frame {i + 1}" for i in range(count))
    return tuple(f"+{m:.0f} min" for m in minutes)


# ------------------------------------------------------------------------------ drawing


def render_frame_strip(frames: QuicklookFrames, *, columns: int = 12, panel_px: int = 120) -> bytes:
    """The frames side by side (rows of `columns`) with one colour bar, as PNG bytes.

    Twelve columns keep a forecast hour at 5 min on one row, so the three products of the
    dashboard fit on one screen.
    """
    # imported here: the API only needs matplotlib for quick-looks, and it takes ~1 s to import
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.figure import Figure

    count = frames.values.shape[0]
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    dpi = 100
    height, width = frames.values.shape[1:]
    panel_w = panel_px / dpi
    panel_h = panel_w * height / width
    if frames.kind == "rate":
        cmap = colormaps["viridis"].with_extremes(under="white", bad=_NO_COVERAGE_COLOUR)
        norm = LogNorm(vmin=RATE_MIN_MM_H, vmax=RATE_MAX_MM_H, clip=False)
        label, ticks = "rain rate [mm h-1]", RATE_TICKS_MM_H
    else:
        cmap = colormaps["YlGnBu"].with_extremes(bad=_NO_COVERAGE_COLOUR)
        norm = Normalize(vmin=0.0, vmax=1.0)
        label, ticks = "probability [0-1]", (0, 0.25, 0.5, 0.75, 1)

    # panels placed by hand, in inches: constrained layout took half of the drawing time
    gap, title_h, label_h, colorbar_area = 0.06, 0.3, 0.22, 1.15
    figure_w = gap + columns * (panel_w + gap) + colorbar_area
    figure_h = title_h + rows * (label_h + panel_h) + 0.15
    with _MATPLOTLIB_LOCK:
        figure = Figure(figsize=(figure_w, figure_h), dpi=dpi)
        FigureCanvasAgg(figure)
        image = None
        for index in range(count):
            row, column = divmod(index, columns)
            left = gap + column * (panel_w + gap)
            bottom = figure_h - title_h - (row + 1) * (label_h + panel_h)
            ax = figure.add_axes(
                (left / figure_w, bottom / figure_h, panel_w / figure_w, panel_h / figure_h)
            )
            ax.set_axis_off()
            frame = frames.values[index]
            if frames.kind == "rate":
                # LogNorm masks zeros like missing data: lift "no rain" to below the scale
                frame = np.where(frame < RATE_MIN_MM_H, RATE_MIN_MM_H / 2, frame)
            image = ax.imshow(
                np.ma.masked_invalid(frame),
                cmap=cmap,
                norm=norm,
                origin="lower" if frames.origin_lower else "upper",
                interpolation="nearest",
            )
            ax.set_title(frames.lead_labels[index], fontsize=9, pad=3)
        figure.suptitle(frames.title, fontsize=10, y=1 - 0.04 / figure_h, va="top")
        strip_bottom = figure_h - title_h - rows * (label_h + panel_h)
        strip_h = rows * (label_h + panel_h) - label_h
        colorbar_axes = figure.add_axes(
            (
                (figure_w - colorbar_area + 0.12) / figure_w,
                strip_bottom / figure_h,
                0.14 / figure_w,
                strip_h / figure_h,
            )
        )
        colorbar = figure.colorbar(
            image, cax=colorbar_axes, extend="both" if frames.kind == "rate" else "neither"
        )
        colorbar.set_ticks(ticks, labels=[f"{t:g}" for t in ticks])
        colorbar.ax.tick_params(labelsize=8)
        colorbar.set_label(label, fontsize=9)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
    return buffer.getvalue()
