"""Radar training data: events, the event split, random crops and the dihedral augmentation.

One CF-NetCDF file per radar event (`../shared/data/radar/`, rain rate `precip` in mm h-1,
`(time, y, x)`, NaN = no coverage). Files are opened lazily with xarray and read one frame at
a time, so nothing is held in memory twice; 500 m BoM grids are block-averaged 2x2 to 1 km as
`BASELINES.md` does.

Frame intervals (the model is a 5-minute model):

- The VAE is frame-wise, so every frame of every training event is usable whatever its interval.
- Sequences (LDM and alignment) take every `sequence_frame_step(interval_s)`-th frame: 5 and
  6-min files as they are (6 min is within 20 % of 5 min; resampling it would need
  interpolating rain fields in time, which smears them), the 2-min MRMS every 2nd frame (4 min;
  its 36 frames then give 18, fewer than one 19-frame window, so MRMS feeds only the VAE), and
  the 10-min BoM c10 day as it is. Ten minutes doubles the per-frame displacement, but the
  model sees that displacement in its 7 context frames, and that file is the only full day of
  varied weather we have; it is 126 of the 214 training windows.

Events in a subfolder (`knmi_2021/`: 18 light-rain or dry KNMI evenings, which teach "dry stays
dry") form one group named after the folder: window sampling draws every group equally often,
so 18 short evenings count as one event, not as 18. Their composite has a radial
non-meteorological streak at the eastern edge of coverage (`ARTEFACT_REGIONS`): it is read as
missing coverage, so no training crop contains it.

Split by event (`VALIDATION_EVENTS`): `mch_20150515` and `knmi_20100826` are held out; they hold
4 of the 11 `BASELINES.md` evaluation cases (mch_20150515_1615/1750, knmi_20100826_0430/0605).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "radar"
VALIDATION_EVENTS: tuple[str, ...] = ("mch_20150515", "knmi_20100826")
MODEL_INTERVAL_S = 300
TARGET_PIXEL_M = 1000.0
# sequences accept an effective interval in this range (see the module docstring)
MIN_SEQUENCE_INTERVAL_S = 240
MAX_SEQUENCE_INTERVAL_S = 600
# a crop position is drawn with probability ~ (wet fraction + this), so dry crops stay rare
DRY_CROP_WEIGHT = 0.02
WET_THRESHOLD_MM_H = 0.1
TRANSIENT_GAP_FRACTION = 0.05
# known non-meteorological artefacts, by file-name prefix: (rows, cols) read as missing coverage.
# KNMI 2021 (data README): a radial streak at rows ~465-505, cols 580-699 in every run, and a
# one-frame line at rows 606-612, cols 660-663; the box covers both with a margin.
ARTEFACT_REGIONS: dict[str, tuple[slice, slice]] = {
    "knmi_pcp_": (slice(455, 620), slice(570, 700)),
}


def sequence_frame_step(interval_s: int) -> int | None:
    """Frames to step so that a sequence is close to the 5-min model interval; None = unusable.

    120 s -> 2 (4 min), 300 s and 360 s -> 1, 600 s -> 1 (accepted, see the module docstring).
    """
    step = max(1, round(MODEL_INTERVAL_S / interval_s))
    effective_s = step * interval_s
    if MIN_SEQUENCE_INTERVAL_S <= effective_s <= MAX_SEQUENCE_INTERVAL_S:
        return step
    return None


class RadarEvent:
    """One radar event file, read lazily frame by frame.

    Parameters
    ----------
    path: a CF-NetCDF file with `precip(time, y, x)` [mm h-1] (MRMS: `(time, lat, lon)`).
    group: the sampling group (default: the event's own name).
    """

    def __init__(self, path: str | Path, group: str | None = None) -> None:
        self.path = Path(path)
        self.name = self.path.stem.removesuffix("_crop512")
        self.group = group or self.name
        self.artefact = next(
            (region for prefix, region in ARTEFACT_REGIONS.items() if self.name.startswith(prefix)),
            None,
        )
        self._dataset = xr.open_dataset(self.path)  # lazy: values are read on indexing
        self._precip = self._dataset["precip"]
        self.interval_s = int(self._dataset.attrs["frame_interval_seconds"])
        pixel_m = float(self._dataset.attrs.get("pixel_size_x_m", TARGET_PIXEL_M))
        # 500 m grids -> 2x2 block mean; ~1 km grids (and MRMS 0.01 deg) are used as they are
        self.block = max(1, round(TARGET_PIXEL_M / pixel_m))
        n_time, rows, cols = self._precip.shape
        self.num_frames = int(n_time)
        self.shape = (rows // self.block, cols // self.block)

    def __repr__(self) -> str:
        return f"RadarEvent({self.name!r}, frames={self.num_frames}, interval_s={self.interval_s})"

    def frame(self, index: int) -> np.ndarray:
        """Frame `index` as `(H, W)` float32 rain rate [mm h-1], NaN = no coverage, ~1 km pixels."""
        return self.frames([index])[0]

    def frames(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at `indices` as `(T, H, W)` float32 [mm h-1], NaN = no coverage."""
        values = np.asarray(self._precip.isel(time=list(indices)).values, dtype=np.float32)
        if self.artefact is not None:
            values[(slice(None), *self.artefact)] = np.nan
        if self.block > 1:
            t, rows, cols = values.shape
            b = self.block
            values = values[:, : rows - rows % b, : cols - cols % b]
            # a block with any missing pixel stays missing (NaN propagates through the mean)
            values = values.reshape(t, rows // b, b, cols // b, b).mean(axis=(2, 4))
        return values

    def sequence_indices(self) -> list[int]:
        """Frame indices of the event resampled to ~5 min (`sequence_frame_step`); [] = unusable."""
        step = sequence_frame_step(self.interval_s)
        if step is None:
            return []
        return list(range(0, self.num_frames, step))

    def close(self) -> None:
        self._dataset.close()


def list_events(data_dir: str | Path = DEFAULT_DATA_DIR) -> list[RadarEvent]:
    """Every `*.nc` event in `data_dir` and its direct subfolders, sorted by name; an event in a
    subfolder belongs to the group named after that folder."""
    data_dir = Path(data_dir)
    paths = sorted(data_dir.glob("*.nc")) + sorted(data_dir.glob("*/*.nc"))
    if not paths:
        raise FileNotFoundError(f"no *.nc radar files in {data_dir}; pass --data DIR")
    return [
        RadarEvent(path, None if path.parent == data_dir else path.parent.name) for path in paths
    ]


def split_events(
    events: Iterable[RadarEvent], validation: Sequence[str] = VALIDATION_EVENTS
) -> tuple[list[RadarEvent], list[RadarEvent]]:
    """(training, validation) events; an event is held out when its name is in `validation`."""
    train, held_out = [], []
    for event in events:
        (held_out if event.name in validation else train).append(event)
    missing = set(validation) - {event.name for event in held_out}
    if missing:
        raise ValueError(f"validation events not found in the data: {sorted(missing)}")
    return train, held_out


def _window_sums(image: np.ndarray, size: int) -> np.ndarray:
    """Sum of `image` `(H, W)` over every `size` x `size` window: `(H - size + 1, W - size + 1)`."""
    padded = np.zeros((image.shape[0] + 1, image.shape[1] + 1), dtype=np.float64)
    padded[1:, 1:] = image.cumsum(0).cumsum(1)
    return (
        padded[size:, size:]
        - padded[:-size, size:]
        - padded[size:, :-size]
        + padded[:-size, :-size]
    )


def crop_candidates(
    rain_mm_h: np.ndarray, crop_px: int, stride: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Crop corners whose window has no missing pixel, and a sampling weight for each.

    Parameters
    ----------
    rain_mm_h (`(H, W)` or `(T, H, W)` float): rain rate [mm h-1], NaN = no coverage; for a
        sequence a pixel counts as covered only if it is covered in every frame.
    crop_px: side of the square crop [px].
    stride: corners are taken on this grid [px].

    Returns
    -------
    corners `(N, 2)` int (row, col) and weights `(N,)` float summing to 1 (N = 0: no valid crop).
    The weight of a crop is its wet fraction (> 0.1 mm/h) plus `DRY_CROP_WEIGHT`.
    """
    stack = rain_mm_h if rain_mm_h.ndim == 3 else rain_mm_h[None]
    if stack.shape[1] < crop_px or stack.shape[2] < crop_px:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0)
    missing = np.isnan(stack).any(axis=0).astype(np.float64)
    wet = (np.nan_to_num(stack, nan=0.0) > WET_THRESHOLD_MM_H).mean(axis=0)
    missing_sums = _window_sums(missing, crop_px)[::stride, ::stride]
    wet_fraction = _window_sums(wet, crop_px)[::stride, ::stride] / crop_px**2
    rows, cols = np.nonzero(missing_sums < 0.5)
    corners = np.stack([rows * stride, cols * stride], axis=1).astype(np.int64)
    weights = wet_fraction[rows, cols] + DRY_CROP_WEIGHT
    return corners, weights / weights.sum() if len(weights) else weights


def dihedral(array: np.ndarray, transform: int) -> np.ndarray:
    """One of the 8 flips/90-degree rotations of the last two axes (`transform` in 0..7).

    0 is the identity; 1-3 rotate by 90/180/270 degrees; 4-7 are the same after a left-right
    flip. Returns a contiguous copy.
    """
    if not 0 <= transform < 8:
        raise ValueError(f"transform must be in 0..7, got {transform}")
    out = np.flip(array, axis=-1) if transform >= 4 else array
    return np.ascontiguousarray(np.rot90(out, k=transform % 4, axes=(-2, -1)))


class FrameCropSampler:
    """Random single-frame crops for the frame-wise VAE, from every frame of the given events.

    Each batch reads `ceil(batch_size / crops_per_frame)` random frames (uniform over all
    frames of all events), cuts fully covered crops (rain-weighted, see `crop_candidates`) and
    applies a random flip/rotation to each.
    """

    def __init__(
        self,
        events: Sequence[RadarEvent],
        crop_px: int,
        rng: np.random.Generator,
        crops_per_frame: int = 4,
    ) -> None:
        self.events = [event for event in events if min(event.shape) >= crop_px]
        if not self.events:
            raise ValueError(f"no event has a grid of at least {crop_px} px")
        self.crop_px = crop_px
        self.rng = rng
        self.crops_per_frame = crops_per_frame
        self._frames = [
            (e, i) for e, event in enumerate(self.events) for i in range(event.num_frames)
        ]

    def batch(self, batch_size: int) -> np.ndarray:
        """`(batch_size, 1, crop_px, crop_px)` float32 rain rate [mm h-1], no NaN."""
        crops: list[np.ndarray] = []
        while len(crops) < batch_size:
            event_index, frame_index = self._frames[self.rng.integers(len(self._frames))]
            frame = self.events[event_index].frame(frame_index)
            corners, weights = crop_candidates(frame, self.crop_px)
            if len(corners) == 0:
                continue
            take = min(self.crops_per_frame, batch_size - len(crops))
            for pick in self.rng.choice(len(corners), size=take, p=weights):
                row, col = corners[pick]
                crop = frame[row : row + self.crop_px, col : col + self.crop_px]
                crops.append(dihedral(crop, int(self.rng.integers(8))))
        return np.stack(crops)[:, None].astype(np.float32)


@dataclass(frozen=True)
class CropSequence:
    """A fixed crop of one event over all its (resampled) frames, already augmented.

    rain_mm_h (`(T, H, W)` float32): rain rate [mm h-1], no NaN; T = the event's sequence length.
    """

    event: str
    corner: tuple[int, int]
    transform: int
    rain_mm_h: np.ndarray


def fill_transient_gaps(rain_mm_h: np.ndarray) -> np.ndarray:
    """Fill pixels missing in only a few frames from the nearest earlier (else later) frame.

    rain_mm_h (`(T, H, W)` float32): [mm h-1], NaN = no coverage. A pixel missing in fewer than
    `TRANSIENT_GAP_FRACTION` of the frames is a dropout, not a coverage edge (BoM c10 has 65
    such pixel-frames in 16 of its 144 frames; without filling, no 256 px crop of that grid is
    covered in every frame). Pixels missing more often stay NaN. Returns a filled copy.
    """
    missing = np.isnan(rain_mm_h)
    fraction = missing.mean(axis=0)
    transient = (fraction > 0) & (fraction < TRANSIENT_GAP_FRACTION)
    if not transient.any():
        return rain_mm_h
    filled = rain_mm_h.copy()
    for order in (range(1, len(filled)), range(len(filled) - 2, -1, -1)):  # forward, backward
        for t in order:
            neighbour = t - 1 if order.step == 1 else t + 1
            gap = np.isnan(filled[t]) & transient
            filled[t][gap] = filled[neighbour][gap]
    return filled


def sample_crop_sequences(
    event: RadarEvent,
    crop_px: int,
    count: int,
    rng: np.random.Generator,
    window: int,
) -> list[CropSequence]:
    """`count` random crops of `event` that are fully covered in every frame of the sequence.

    Transient dropouts are filled first (`fill_transient_gaps`). The crops are drawn
    rain-weighted (`crop_candidates` over the whole sequence), each with a
    random flip/rotation, as distinct (corner, transform) pairs (at most 8 per corner). Returns
    [] when the event has fewer than `window` sequence frames or no fully covered crop.
    """
    indices = event.sequence_indices()
    if len(indices) < window:
        return []
    frames = fill_transient_gaps(event.frames(indices))
    corners, weights = crop_candidates(frames, crop_px)
    if len(corners) == 0:
        return []
    # distinct (corner, transform) pairs: a grid no larger than the crop (BoM after block
    # averaging) has one corner, and repeating a pair would only duplicate a sequence
    count = min(count, 8 * len(corners))
    chosen: set[tuple[int, int]] = set()
    while len(chosen) < count:
        chosen.add((int(rng.choice(len(corners), p=weights)), int(rng.integers(8))))
    sequences = []
    for pick, transform in sorted(chosen):
        row, col = (int(v) for v in corners[pick])
        crop = frames[:, row : row + crop_px, col : col + crop_px]
        sequences.append(CropSequence(event.name, (row, col), transform, dihedral(crop, transform)))
    return sequences


def num_windows(sequence_length: int, window: int) -> int:
    """Windows of `window` consecutive frames (stride 1) in a sequence of `sequence_length`."""
    return max(0, sequence_length - window + 1)


def sample_windows(
    event: RadarEvent,
    crop_px: int,
    count: int,
    rng: np.random.Generator,
    window: int,
) -> list[CropSequence]:
    """`count` random windows of `window` consecutive sequence frames of `event`, each cut to a
    random crop fully covered in all its frames (rain-weighted, `crop_candidates`) with a random
    flip/rotation. A grid smaller than `crop_px` gives crops of its smaller side (rounded down to
    a multiple of 8 px). Transient dropouts are filled over the whole event first. Windows
    without a covered crop are skipped; [] when the event is too short.
    """
    indices = event.sequence_indices()
    starts = num_windows(len(indices), window)
    if starts == 0 or count <= 0:
        return []
    side = min(crop_px, *event.shape) // 8 * 8
    frames = fill_transient_gaps(event.frames(indices))
    windows = []
    for _ in range(count):
        start = int(rng.integers(starts))
        part = frames[start : start + window]
        corners, weights = crop_candidates(part, side)
        if len(corners) == 0:
            continue
        row, col = (int(v) for v in corners[rng.choice(len(corners), p=weights)])
        transform = int(rng.integers(8))
        crop = part[:, row : row + side, col : col + side]
        windows.append(CropSequence(event.name, (row, col), transform, dihedral(crop, transform)))
    return windows
