"""Behaviour of the shipped default model (models/weights): what a forecaster relies on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.metadata import DEFAULT_MODEL_DIR
from models.pipeline import NowcastPipeline

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mch_20150515_256.nc"
MEMBERS = 10


@pytest.fixture(scope="module")
def shipped() -> NowcastPipeline:
    return NowcastPipeline.from_model_dir(DEFAULT_MODEL_DIR)


def test_dry_input_stays_dry(shipped: NowcastPipeline) -> None:
    """Seven rainless frames: no member may paint rain (small-v2 made up to 16-21 mm/h)."""
    grid = shipped.config.max_grid_px
    past = np.zeros((shipped.config.frames_in, grid, grid), dtype=np.float32)
    forecast = shipped.forecast(past, members=MEMBERS, seed=0)
    wet = (forecast > 1.0).reshape(MEMBERS, -1).mean(axis=1)
    assert wet.max() <= 0.001, wet
    assert forecast.max() < 5.0


def test_forecast_moves_with_the_rain(shipped: NowcastPipeline) -> None:
    """On the worked example the ensemble mean follows the extrapolation nowcast: at the last
    lead it is closer to the advected last frame than to the last frame left in place."""
    import xarray as xr

    from models.extrapolation import extrapolate

    with xr.open_dataset(EXAMPLE) as dataset:
        past = dataset["precip"].values.astype(np.float32)
    frames_out = shipped.config.frames_out
    forecast = shipped.forecast(past, members=MEMBERS, seed=1)
    mean = np.nan_to_num(forecast).mean(axis=0)
    advected = extrapolate(past, frames_out).rain_mm_h
    last = np.nan_to_num(past[-1])
    assert np.abs(mean[-1] - advected[-1]).mean() < np.abs(mean[-1] - last).mean()
