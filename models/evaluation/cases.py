"""Evaluation cases cut from radar event files by the protocol of `shared/BASELINES.md`.

The rule, step by step:
1. Event frames: every frame of the file at its own interval, from `PROTOCOL_EVENT_START` where the
   event has an entry (KNMI: the file holds 00:00-07:35, the protocol's event starts at 04:00, as
   the data README records), else from the file's first frame. Only files at a 5- or 6-minute
   interval are cases (the model is a 5-minute model; the 6-minute BoM Melbourne file is accepted
   as-is); the 10-minute BoM and 2-minute MRMS files have no protocol cases.
2. Windows: non-overlapping runs of 7 past + 12 future frames from the first event frame; a
   trailing run shorter than 19 frames is dropped.
3. Grid: ~1 km. Sub-kilometre grids are block-averaged (BoM 500 m: 2x2); a block with a missing
   pixel is missing.
4. Crop: among the 256x256 windows at a 4-pixel stride whose pixels are all present in all 19
   frames, the one with the most pixel-frames >= 1 mm/h (ties: the first in row-major order).
5. Id: `<source>_<YYYYMMDD_HHMM of the last past frame, UTC>`, source = the file name up to the
   first underscore. These rules give exactly the 11 case ids of BASELINES.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

FRAMES_IN = 7
FRAMES_OUT = 12
CROP_PX = 256
CROP_STRIDE_PX = 4
WET_MM_H = 1.0
TARGET_PIXEL_M = 1000.0
PROTOCOL_INTERVALS_S = (300, 360)
# event name (the files' `event` attribute) -> first frame of the protocol's event, UTC
PROTOCOL_EVENT_START: dict[str, np.datetime64] = {
    "knmi_20100826": np.datetime64("2010-08-26T04:00"),
}


@dataclass(frozen=True)
class Case:
    """One evaluation case: a 7-frame past and the 12 observed future frames on one crop.

    `past` (`(7, 256, 256)` float32) and `future` (`(12, 256, 256)` float32): rain rate
    [mm h-1], no missing pixel. `crop_row`/`crop_col`: top-left pixel of the crop on the
    (block-averaged) grid, row 0 = north.
    """

    case_id: str
    source: str
    event: str
    past: np.ndarray
    future: np.ndarray
    interval_s: int
    pixel_size_km: float
    last_past_time: np.datetime64
    crop_row: int
    crop_col: int


class NoCasesError(ValueError):
    """A file that the protocol cannot cut into cases (wrong interval, grid too small)."""


def block_average(frames: np.ndarray, factor: int) -> np.ndarray:
    """Mean over `factor` x `factor` pixel blocks; a block with a NaN pixel is NaN.

    frames (`(T, H, W)` float): rain rate [mm h-1]; H and W are cut to multiples of `factor`.
    Returns (`(T, H // factor, W // factor)` float32).
    """
    if factor == 1:
        return frames.astype(np.float32, copy=False)
    n_frames, height, width = frames.shape
    rows, cols = height // factor, width // factor
    blocks = frames[:, : rows * factor, : cols * factor].reshape(
        n_frames, rows, factor, cols, factor
    )
    return blocks.mean(axis=(2, 4), dtype=np.float64).astype(np.float32)


def _window_sums(per_pixel: np.ndarray, size: int, stride: int) -> np.ndarray:
    """Sums of `per_pixel` (`(H, W)` int) over size x size windows at the given stride.

    Returns (`(n_rows, n_cols)` int64) where entry (i, j) is the window at (i*stride, j*stride).
    """
    integral = np.zeros((per_pixel.shape[0] + 1, per_pixel.shape[1] + 1), dtype=np.int64)
    integral[1:, 1:] = per_pixel.cumsum(axis=0).cumsum(axis=1)
    starts_r = np.arange(0, per_pixel.shape[0] - size + 1, stride)
    starts_c = np.arange(0, per_pixel.shape[1] - size + 1, stride)
    r0, c0 = np.ix_(starts_r, starts_c)
    return (
        integral[r0 + size, c0 + size]
        - integral[r0, c0 + size]
        - integral[r0 + size, c0]
        + (integral[r0, c0])
    )


def select_crop(
    frames: np.ndarray, crop_px: int = CROP_PX, stride_px: int = CROP_STRIDE_PX
) -> tuple[int, int] | None:
    """Top-left (row, col) of the protocol's crop, or None when no window is fully covered.

    frames (`(T, H, W)` float): rain rate [mm h-1], NaN = no coverage. The crop is the
    `crop_px` square (at a `stride_px` stride) with no NaN in any frame and the most
    pixel-frames >= 1 mm/h; ties go to the first window in row-major order.
    """
    _, height, width = frames.shape
    if height < crop_px or width < crop_px:
        return None
    missing = np.any(~np.isfinite(frames), axis=0).astype(np.int64)
    wet = np.sum(np.nan_to_num(frames, nan=0.0) >= WET_MM_H, axis=0).astype(np.int64)
    missing_sums = _window_sums(missing, crop_px, stride_px)
    wet_sums = np.where(missing_sums == 0, _window_sums(wet, crop_px, stride_px), -1)
    best = int(np.argmax(wet_sums))
    i, j = np.unravel_index(best, wet_sums.shape)
    if wet_sums[i, j] < 0:
        return None
    return int(i) * stride_px, int(j) * stride_px


def _pixel_size_m(ds: xr.Dataset) -> float:
    if "pixel_size_x_m" in ds.attrs:
        return float(ds.attrs["pixel_size_x_m"])
    x = ds["precip"].dims[-1]
    step = float(abs(ds[x].values[1] - ds[x].values[0]))
    if ds[x].attrs.get("units", "").startswith("degree"):
        raise NoCasesError(f"grid in degrees ({x}); the protocol needs a projected ~1 km grid")
    return step


def _frame_interval_s(ds: xr.Dataset) -> int:
    if "frame_interval_seconds" in ds.attrs:
        return int(ds.attrs["frame_interval_seconds"])
    times = ds["time"].values
    return int((times[1] - times[0]) / np.timedelta64(1, "s"))


def source_of(path: str | Path) -> str:
    """The source prefix of an event file name: `bom_prcp-cscn_2_20180616.nc` -> `bom`."""
    return Path(path).name.split("_", 1)[0]


def case_id(source: str, last_past_time: np.datetime64) -> str:
    """`<source>_<YYYYMMDD_HHMM>` of the last past frame (UTC)."""
    stamp = np.datetime_as_string(last_past_time, unit="m")  # 2018-06-16T10:36
    return f"{source}_{stamp[0:4]}{stamp[5:7]}{stamp[8:10]}_{stamp[11:13]}{stamp[14:16]}"


def iter_cases(
    path: str | Path,
    frames_in: int = FRAMES_IN,
    frames_out: int = FRAMES_OUT,
    crop_px: int = CROP_PX,
    stride_px: int = CROP_STRIDE_PX,
) -> Iterator[Case]:
    """Yield the protocol cases of one CF-NetCDF event file, reading one window at a time.

    The file holds `precip(time, y, x)` in mm h-1 with NaN (decoded `_FillValue`) outside
    coverage. Raises `NoCasesError` for a file at an interval other than 5 or 6 minutes. A window
    without a fully covered crop is skipped.
    """
    with xr.open_dataset(path) as ds:
        interval_s = _frame_interval_s(ds)
        if interval_s not in PROTOCOL_INTERVALS_S:
            raise NoCasesError(
                f"{Path(path).name}: frame interval {interval_s} s; protocol cases need "
                f"{' or '.join(str(s // 60) for s in PROTOCOL_INTERVALS_S)} minutes"
            )
        pixel_m = _pixel_size_m(ds)
        factor = max(1, round(TARGET_PIXEL_M / pixel_m))
        event = str(ds.attrs.get("event", Path(path).stem))
        source = source_of(path)
        times = ds["time"].values.astype("datetime64[m]")
        first = 0
        if event in PROTOCOL_EVENT_START:
            first = int(np.searchsorted(times, PROTOCOL_EVENT_START[event]))
        window = frames_in + frames_out
        for start in range(first, len(times) - window + 1, window):
            raw = ds["precip"].isel(time=slice(start, start + window)).values
            frames = block_average(np.asarray(raw, dtype=np.float32), factor)
            origin = select_crop(frames, crop_px, stride_px)
            if origin is None:
                continue
            row, col = origin
            crop = np.ascontiguousarray(frames[:, row : row + crop_px, col : col + crop_px])
            last_past = times[start + frames_in - 1]
            yield Case(
                case_id=case_id(source, last_past),
                source=source,
                event=event,
                past=crop[:frames_in],
                future=crop[frames_in:],
                interval_s=interval_s,
                pixel_size_km=pixel_m * factor / 1000.0,
                last_past_time=last_past,
                crop_row=row,
                crop_col=col,
            )


def build_cases(paths: list[str | Path], **kwargs: int) -> list[Case]:
    """All protocol cases of the given event files, in file then time order.

    Files without protocol cases (`NoCasesError`) are skipped; see `iter_cases` for the rule.
    """
    cases: list[Case] = []
    for path in paths:
        try:
            cases.extend(iter_cases(path, **kwargs))
        except NoCasesError:
            continue
    return cases
