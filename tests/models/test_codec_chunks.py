"""The VAE codec runs in calls of at most `codec_chunk_px` pixels, whatever the ensemble or grid,
and the forecast does not depend on that budget (real tiny model, ONNX codec)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from models.config import TINY
from models.pipeline import ForecastRequest, NowcastPipeline


class RecordingCodec:
    """A codec that calls the real one and records the full-resolution pixels of every call."""

    def __init__(self, codec: Callable[[torch.Tensor], torch.Tensor], scale: int) -> None:
        self.codec = codec
        self.scale = scale  # 8 for a decoder (latent in, pixels out), 1 for an encoder
        self.call_px: list[int] = []

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        count, _, height, width = frames.shape
        self.call_px.append(count * height * width * self.scale**2)
        return self.codec(frames)


def _past(height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    past = rng.gamma(0.5, 3.0, size=(TINY.frames_in, height, width)).astype(np.float32)
    past[-1, :5, :7] = np.nan  # no coverage: missing in the output, cropped padding around it
    return past


@pytest.fixture(scope="module")
def base(tiny_model_dir: Path) -> NowcastPipeline:
    return NowcastPipeline.from_model_dir(tiny_model_dir, denoiser_precision="float32")


@pytest.mark.parametrize(
    ("tile_px", "grid", "budget_px"),
    [
        (None, (60, 70), 2 * 64 * 80),  # two frames (padded to 64 x 80) per call
        (None, (60, 70), 1),  # below one frame: one frame per call
        (96, (150, 130), 3 * 96 * 96),  # tiled grid: three 96 px tiles per call
    ],
    ids=["frames", "one-frame", "tiles"],
)
def test_codec_calls_stay_within_the_pixel_budget(
    base: NowcastPipeline, tile_px: int | None, grid: tuple[int, int], budget_px: int
) -> None:
    config = base.config if tile_px is None else base.config.replace(max_grid_px=tile_px)
    decoder = RecordingCodec(base.decoder, scale=8)
    bounded = NowcastPipeline(
        config, base.encoder, decoder, base.denoiser, base.alignment, codec_chunk_px=budget_px
    )
    unbounded = NowcastPipeline(
        config, base.encoder, base.decoder, base.denoiser, base.alignment, codec_chunk_px=10**12
    )
    requests = [
        ForecastRequest(_past(*grid), members=3, steps=1, seed=1),
        ForecastRequest(_past(*grid), members=2, steps=1, seed=2),
    ]
    forecasts = bounded.forecast_batch(requests)
    # one frame or tile per call is the floor: a budget below it cannot be kept
    tile_or_frame_px = max(min(decoder.call_px), budget_px)
    assert max(decoder.call_px) <= tile_or_frame_px
    assert len(decoder.call_px) > 2  # the budget did split the decoding
    expected = unbounded.forecast_batch(requests)
    for forecast, reference, request in zip(forecasts, expected, requests, strict=True):
        assert forecast.shape == (request.members, TINY.frames_out, *grid)
        assert forecast.flags.c_contiguous
        assert np.isnan(forecast[:, :, :5, :7]).all()
        # the same bits: frames are decoded independently, whatever their call
        np.testing.assert_array_equal(forecast.view(np.int32), reference.view(np.int32))
