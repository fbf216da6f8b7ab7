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


def _dry_forecast(shipped: NowcastPipeline) -> np.ndarray:
    grid = shipped.config.max_grid_px
    past = np.zeros((shipped.config.frames_in, grid, grid), dtype=np.float32)
    return shipped.forecast(past, members=MEMBERS, seed=0)


def test_dry_input_stays_mostly_dry(shipped: NowcastPipeline) -> None:
    """Seven rainless frames: no member has more than 0.1 % of its pixel-frames above 1 mm/h
    (small-v3: at most 0.085 %)."""
    wet = (_dry_forecast(shipped) > 1.0).reshape(MEMBERS, -1).mean(axis=1)
    assert wet.max() <= 0.001, wet


@pytest.mark.xfail(
    strict=True,
    reason="issue 10 bar not met yet: small-v3 paints isolated cells of up to ~11 mm/h from a "
    "dry input (small-v2: 16-21 mm/h); strict, so the day it holds this test says so",
)
def test_dry_input_never_reaches_5_mm_h(shipped: NowcastPipeline) -> None:
    assert _dry_forecast(shipped).max() < 5.0
