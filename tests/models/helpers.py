"""Small helpers shared by the model tests."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch

from models.config import TINY, ModelConfig
from models.pipeline import NowcastPipeline


def random_latents(
    generator: torch.Generator, batch: int, frames: int, height: int = 8, width: int = 8
) -> torch.Tensor:
    """Standard normal latents `(batch, frames, C, height, width)` with C of the `tiny` VAE."""
    channels = TINY.vae.latent_channels
    return torch.randn(batch, frames, channels, height, width, generator=generator)


def losses_around_one_adam_step(
    loss: Callable[[], torch.Tensor], parameters: Iterable[torch.nn.Parameter], lr: float
) -> tuple[float, float]:
    """(loss before, loss after) one Adam step of `parameters` on `loss()` (a scalar tensor).

    `loss` must be deterministic (fixed batch, fixed noise) for the two values to compare. The
    second call keeps autograd on: a loss may differentiate inside (the VAE's adaptive GAN
    weight does).
    """
    optimiser = torch.optim.Adam(parameters, lr=lr)
    before = loss()
    optimiser.zero_grad()
    before.backward()
    optimiser.step()
    after = loss()
    return before.item(), after.item()


def with_config(pipeline: NowcastPipeline, config: ModelConfig, **options: Any) -> NowcastPipeline:
    """A pipeline on `pipeline`'s networks (codec, denoiser, alignment net, readout) with another
    `config`; `options` are `NowcastPipeline`'s keyword arguments (tile_rows, ...)."""
    return NowcastPipeline(
        config,
        pipeline.encoder,
        pipeline.decoder,
        pipeline.denoiser,
        pipeline.alignment,
        readout=pipeline.readout,
        **options,
    )


def responsive(readout: torch.nn.Module, gain: float = 20.0) -> torch.nn.Module:
    """A copy of an (untrained) intensity readout whose output layer is `gain` times steeper: a
    fresh net barely responds to its input; a trained one does (rain grows with the latents)."""
    steep = copy.deepcopy(readout)
    with torch.no_grad():
        steep.net[-1].weight.mul_(gain)
    return steep.eval().requires_grad_(False)
