"""Radar dataset: lazy events, block averaging, event split, NaN-free crops, augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from models.data import (
    DEFAULT_DATA_DIR,
    VALIDATION_EVENTS,
    FrameCropSampler,
    RadarEvent,
    crop_candidates,
    dihedral,
    fill_transient_gaps,
    list_events,
    sample_crop_sequences,
    sequence_frame_step,
    split_events,
)

pytestmark = pytest.mark.skipif(
    not DEFAULT_DATA_DIR.is_dir(), reason="shared radar data not present"
)

# a 96 x 96 px corner of mch_20170131 where ~14 % of the pixels are outside coverage
MCH_EDGE = ("mch_20170131", 128, 576)
# a fully covered, rainy 96 x 96 px window of mch_20150515
MCH_VALID = ("mch_20150515", 272, 384)


def write_radar_subset(
    target_dir: Path, event: str, row: int, col: int, size: int = 96, frames: int = 16
) -> Path:
    """Cut a small real event file (first `frames` frames, `size` px square) into `target_dir`."""
    target_dir.mkdir(parents=True, exist_ok=True)
    with xr.open_dataset(DEFAULT_DATA_DIR / f"{event}.nc") as ds:
        subset = ds.isel(time=slice(0, frames), y=slice(row, row + size), x=slice(col, col + size))
        path = target_dir / f"{event}.nc"
        subset.to_netcdf(path)
    return path


def test_sequence_frame_step_follows_the_interval_policy():
    assert sequence_frame_step(300) == 1
    assert sequence_frame_step(360) == 1  # BoM cscn: 6 min accepted as it is
    assert sequence_frame_step(600) == 1  # BoM c10: 10 min accepted as it is
    assert sequence_frame_step(120) == 2  # MRMS: every 2nd frame = 4 min
    assert sequence_frame_step(3600) is None


def test_event_split_has_no_overlap_and_names_the_held_out_events():
    events = list_events()
    train, validation = split_events(events)
    train_names = {e.name for e in train}
    validation_names = {e.name for e in validation}
    assert validation_names == set(VALIDATION_EVENTS)
    assert not train_names & validation_names
    assert train_names | validation_names == {e.name for e in events}
    with pytest.raises(ValueError, match="not found"):
        split_events(events, ("no_such_event",))


def test_bom_500m_frames_are_block_averaged_to_1km(tmp_path):
    path = write_radar_subset(tmp_path, "bom_prcp-cscn_2_20180616", 200, 200, size=64, frames=3)
    event = RadarEvent(path)
    assert event.block == 2
    assert event.shape == (32, 32)
    frame = event.frame(1)
    with xr.open_dataset(path) as ds:
        native = ds["precip"].isel(time=1).values
    expected = native.reshape(32, 2, 32, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(frame, expected, rtol=1e-6)
    assert event.frames([0, 2]).shape == (2, 32, 32)


def test_crop_candidates_exclude_every_window_with_missing_pixels():
    rain = np.zeros((40, 40), dtype=np.float32)
    rain[5, 30] = np.nan
    rain[20:30, 0:10] = 5.0
    corners, weights = crop_candidates(rain, crop_px=16, stride=1)
    for row, col in corners:
        assert not np.isnan(rain[row : row + 16, col : col + 16]).any()
    # every window that avoids the NaN pixel is a candidate
    expected = sum(
        1 for r in range(25) for c in range(25) if not np.isnan(rain[r : r + 16, c : c + 16]).any()
    )
    assert len(corners) == expected
    assert weights.sum() == pytest.approx(1.0)
    # the rainy window is preferred over a dry one
    index = {tuple(c): i for i, c in enumerate(corners)}
    assert weights[index[(16, 0)]] > weights[index[(0, 0)]]


def test_frame_crops_of_a_partly_covered_real_event_have_no_nan(tmp_path):
    path = write_radar_subset(tmp_path, *MCH_EDGE)
    event = RadarEvent(path)
    assert np.isnan(event.frames(range(event.num_frames))).any()  # the fixture has gaps
    sampler = FrameCropSampler([event], crop_px=32, rng=np.random.default_rng(0))
    batch = sampler.batch(10)
    assert batch.shape == (10, 1, 32, 32)
    assert batch.dtype == np.float32
    assert np.isfinite(batch).all()
    assert (batch >= 0).all()


def test_crop_sequences_are_covered_in_every_frame(tmp_path):
    path = write_radar_subset(tmp_path, *MCH_EDGE)
    event = RadarEvent(path)
    sequences = sample_crop_sequences(event, 32, 3, np.random.default_rng(1), window=13)
    assert len(sequences) == 3
    for sequence in sequences:
        assert sequence.rain_mm_h.shape == (16, 32, 32)
        assert np.isfinite(sequence.rain_mm_h).all()
        row, col = sequence.corner
        original = event.frames(range(16))[:, row : row + 32, col : col + 32]
        np.testing.assert_array_equal(sequence.rain_mm_h, dihedral(original, sequence.transform))
    # a window longer than the event gives nothing
    assert sample_crop_sequences(event, 32, 3, np.random.default_rng(1), window=19) == []


def test_dihedral_gives_eight_distinct_transforms_of_an_asymmetric_field():
    field = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    results = [dihedral(field, k) for k in range(8)]
    assert len({r.tobytes() + bytes(r.shape) for r in results}) == 8
    np.testing.assert_array_equal(results[0], field)
    np.testing.assert_array_equal(results[2], field[:, ::-1, ::-1])
    np.testing.assert_array_equal(results[4], field[:, :, ::-1])
    assert results[1].shape == (1, 4, 3)
    with pytest.raises(ValueError):
        dihedral(field, 8)


def test_transient_gaps_are_filled_from_neighbouring_frames_but_coverage_edges_stay():
    rain = np.arange(60 * 4, dtype=np.float32).reshape(60, 2, 2)
    rain[0, 0, 0] = np.nan  # a dropout in the first frame: filled from the next frame
    rain[10, 0, 0] = np.nan  # a dropout later on: filled from the previous frame
    rain[:, 1, 1] = np.nan  # never covered: stays missing
    filled = fill_transient_gaps(rain)
    assert filled[0, 0, 0] == rain[1, 0, 0]
    assert filled[10, 0, 0] == rain[9, 0, 0]
    assert np.isnan(filled[:, 1, 1]).all()
    assert np.isnan(rain[0, 0, 0])  # the input is not modified
