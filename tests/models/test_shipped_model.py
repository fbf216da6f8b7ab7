"""Behaviour of the shipped default model (models/weights): what a forecaster relies on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from models.metadata import DEFAULT_MODEL_DIR
from models.pipeline import IntensityConstraint, NowcastPipeline

MEMBERS = 10
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mch_20150515_256.nc"


@pytest.fixture(scope="module")
def shipped() -> NowcastPipeline:
    return NowcastPipeline.from_model_dir(DEFAULT_MODEL_DIR)


@pytest.mark.parametrize("target_mm_h", [None, 5.0])
def test_dry_input_stays_dry(shipped: NowcastPipeline, target_mm_h: float | None) -> None:
    """Seven rainless frames: no member has more than 0.1 % of its pixel-frames above 1 mm/h
    and none reaches 5 mm/h anywhere (small-v3 without its precipitation mask: isolated cells
    up to ~11 mm/h, see the model card), even when 5 mm/h is asked for: a request steers the
    rain the extrapolation carries, it does not paint rain where there is none."""
    grid = shipped.config.max_grid_px
    past = np.zeros((shipped.config.frames_in, grid, grid), dtype=np.float32)
    constraint = None if target_mm_h is None else IntensityConstraint(target_mm_h)
    forecast = shipped.forecast(past, members=MEMBERS, seed=0, constraint=constraint)
    wet = (forecast > 1.0).reshape(MEMBERS, -1).mean(axis=1)
    assert wet.max() <= 0.001, wet
    assert forecast.max() < 5.0


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_a_requested_intensity_is_reached(shipped: NowcastPipeline, factor: float) -> None:
    """A request for half or twice the unconstrained forecast's mean rain rate gets a forecast
    within 20 % of it, where the unconstrained one is 50 % or 100 % off (the held-out MeteoSwiss
    sample; measured +16 % and -9 %, the readout's error on steered latents; v3.4's guidance
    closed 10-17 % of the gap to a doubled mean)."""
    with xr.open_dataset(EXAMPLE) as sample:
        past = sample["precip"].values.astype(np.float32)
    # NaN outside the radar's coverage, as in the input
    plain = float(np.nanmean(shipped.forecast(past, members=4, seed=0)))
    target = factor * plain
    steered = shipped.forecast(
        past, members=4, seed=0, constraint=IntensityConstraint(target_mm_h=target)
    )
    assert float(np.nanmean(steered)) == pytest.approx(target, rel=0.2), (plain, target)
