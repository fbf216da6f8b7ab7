"""Knowledge-alignment network: shapes, paper size, use of the context, one training step."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from models.alignment import AlignmentNet
from models.config import PAPER, TINY, ModelConfig
from models.schedulers import NoiseSchedule
from tests.models.helpers import losses_around_one_adam_step, random_latents

REFERENCE_ALIGNMENT_PARAMS = 8.9e6  # reference implementation (ignores the context), paper config


def _build(config: ModelConfig = TINY, seed: int = 0) -> AlignmentNet:
    """A network whose initial weights depend only on `seed` (global RNG state restored)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AlignmentNet(config).eval()


def _without_context(config: ModelConfig) -> ModelConfig:
    return config.replace(alignment=dataclasses.replace(config.alignment, use_context=False))


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(99)


@pytest.mark.parametrize("use_context", [True, False])
@pytest.mark.parametrize("height, width", [(8, 8), (8, 16), (12, 4)])
def test_output_shape(
    generator: torch.Generator, use_context: bool, height: int, width: int
) -> None:
    config = TINY if use_context else _without_context(TINY)
    net = _build(config)
    sample = random_latents(generator, 3, TINY.frames_out, height, width)
    context = random_latents(generator, 3, TINY.frames_in, height, width)
    prediction = net(sample, torch.tensor([0, 500, 999]), context)
    assert prediction.shape == (3, TINY.frames_out)
    assert torch.isfinite(prediction).all()


def test_context_is_used_only_when_configured(generator: torch.Generator) -> None:
    sample = random_latents(generator, 2, TINY.frames_out)
    context = random_latents(generator, 2, TINY.frames_in)
    steps = torch.tensor([100, 800])
    with_context = _build(TINY)
    changed = with_context(sample, steps, context + 1.0) - with_context(sample, steps, context)
    assert changed.abs().max() > 1e-4
    blind = _build(_without_context(TINY))
    torch.testing.assert_close(blind(sample, steps, context + 1.0), blind(sample, steps, context))


def test_rejects_bad_grid_and_context(generator: torch.Generator) -> None:
    net = _build()
    with pytest.raises(ValueError, match="expected context"):
        net(
            random_latents(generator, 1, TINY.frames_out),
            torch.tensor([1]),
            random_latents(generator, 1, TINY.frames_in - 1),
        )
    with pytest.raises(ValueError, match="multiple of 2"):
        net(
            random_latents(generator, 1, TINY.frames_out, 8, 7),
            torch.tensor([1]),
            random_latents(generator, 1, TINY.frames_in, 8, 7),
        )


def test_paper_size() -> None:
    """Within 10 % of the reference's 8.9 M; the context costs only input-side parameters."""
    with torch.device("meta"):
        ours = _count(AlignmentNet(PAPER))
        blind = _count(AlignmentNet(_without_context(PAPER)))
    assert abs(blind - REFERENCE_ALIGNMENT_PARAMS) <= 0.10 * REFERENCE_ALIGNMENT_PARAMS, blind
    assert abs(ours - REFERENCE_ALIGNMENT_PARAMS) <= 0.10 * REFERENCE_ALIGNMENT_PARAMS, ours
    # one more input channel, 7 more rows in the time table and longer time-bias tables
    assert 0 < ours - blind < 2_000, ours - blind


def test_one_adam_step_lowers_mse(generator: torch.Generator) -> None:
    net = _build().train()
    schedule = NoiseSchedule(TINY.diffusion)
    clean = random_latents(generator, 4, TINY.frames_out)
    context = random_latents(generator, 4, TINY.frames_in)
    # a target the network can learn from the latents: each frame's mean latent value
    target = clean.mean(dim=(2, 3, 4)) + 0.5
    timesteps = torch.tensor([10, 250, 500, 750])
    noisy = schedule.add_noise(clean, torch.randn(clean.shape, generator=generator), timesteps)

    def loss() -> torch.Tensor:
        return torch.nn.functional.mse_loss(net(noisy, timesteps, context), target)

    before, after = losses_around_one_adam_step(loss, net.parameters(), lr=1e-4)
    assert after < before - 1e-4, (before, after)
