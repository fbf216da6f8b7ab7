"""Behaviour of the shipped default model (models/weights): what a forecaster relies on."""

from __future__ import annotations

import numpy as np
import pytest

from models.metadata import DEFAULT_MODEL_DIR
from models.pipeline import NowcastPipeline

MEMBERS = 10


@pytest.fixture(scope="module")
def shipped() -> NowcastPipeline:
    return NowcastPipeline.from_model_dir(DEFAULT_MODEL_DIR)


def test_dry_input_stays_dry(shipped: NowcastPipeline) -> None:
    """Seven rainless frames: no member has more than 0.1 % of its pixel-frames above 1 mm/h
    and none reaches 5 mm/h anywhere (small-v3 without its precipitation mask: isolated cells
    up to ~11 mm/h, see the model card)."""
    grid = shipped.config.max_grid_px
    past = np.zeros((shipped.config.frames_in, grid, grid), dtype=np.float32)
    forecast = shipped.forecast(past, members=MEMBERS, seed=0)
    wet = (forecast > 1.0).reshape(MEMBERS, -1).mean(axis=1)
    assert wet.max() <= 0.001, wet
    assert forecast.max() < 5.0
