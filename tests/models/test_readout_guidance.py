"""Readout guidance: Newton steps of the clean estimate through a real (tiny, untrained)
intensity readout.

Sampling uses the exact noise prediction for N(0, I) data as its denoiser (as in
`test_guidance.py`), and the latents are the sampler's state itself: what moves the readout's
mean toward the target is the guidance alone.
"""

from __future__ import annotations

import math

import pytest
import torch

from models.config import TINY
from models.guidance import ReadoutGuidance
from models.intensity_readout import IntensityReadout
from models.schedulers import DDIMSampler, DDPMSampler, NoiseSchedule, randn_rows
from tests.models.helpers import random_latents, responsive

FRAMES, SIDE = TINY.frames_out, 4


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@pytest.fixture(scope="module")
def readout() -> IntensityReadout:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return responsive(IntensityReadout(TINY))


def _sample(
    guidance: ReadoutGuidance | None, members: int, steps: int, seed: int = 0, eta: float = 1.0
) -> torch.Tensor:
    schedule = NoiseSchedule(TINY.diffusion)
    sampler = DDIMSampler(schedule, steps, eta)
    generator = torch.Generator().manual_seed(seed)
    sample = randn_rows((members, FRAMES, TINY.vae.latent_channels, SIDE, SIDE), generator)
    for t in sampler.timesteps:
        eps = math.sqrt(1.0 - schedule.alpha_prod(t)) * sample
        shift = None
        if guidance is not None:
            clean = sampler.clean_estimate(eps, t, sample)
            final = t == sampler.timesteps[-1]
            change = guidance.clean_change(clean, _identity, final=final)
            shift = None if change is None else sampler.clean_weight(t) * change
        sample = sampler.step(eps, t, sample, generator, mean_shift=shift)
    return sample


def _means(readout: IntensityReadout, sample: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return readout(sample.flatten(0, 1)).reshape(sample.shape[0], -1).mean(dim=1)


@pytest.mark.parametrize("steps", [10, 50])
def test_lambda_one_reaches_the_target_at_any_step_count(
    readout: IntensityReadout, steps: int
) -> None:
    members = 4
    plain = _means(readout, _sample(None, members, steps))
    targets = torch.tensor([0.5, 1.5, 2.0, 0.75]) * plain
    guided = _means(readout, _sample(ReadoutGuidance(readout, targets, 1.0), members, steps))
    relative = ((guided - targets).abs() / targets).max().item()
    assert relative < 0.01, (plain, targets, guided)
    assert ((plain - targets).abs() / targets).min() > 0.25  # the targets were far away


def test_half_lambda_moves_part_of_the_way(readout: IntensityReadout) -> None:
    plain = _means(readout, _sample(None, 3, 10))
    targets = 2.0 * plain
    half = _means(readout, _sample(ReadoutGuidance(readout, targets, 0.5), 3, 10))
    assert bool((half > plain * 1.2).all()) and bool((half < targets * 0.99).all())


def test_zero_lambda_is_no_guidance_bit_for_bit(readout: IntensityReadout) -> None:
    targets = torch.full((3,), 5.0)
    plain = _sample(None, 3, 5, seed=2)
    assert ReadoutGuidance(readout, targets, 0.0).clean_change(plain, _identity) is None
    mixed = ReadoutGuidance(readout, targets, torch.tensor([0.0, 1.0, 1.0]))
    guided = _sample(mixed, 3, 5, seed=2)
    assert torch.equal(guided[0], plain[0])
    assert not torch.allclose(guided[1:], plain[1:])


def test_members_do_not_couple_and_the_trust_region_bounds_each_step(
    readout: IntensityReadout,
) -> None:
    clean = random_latents(torch.Generator().manual_seed(3), 3, FRAMES, SIDE, SIDE)
    # member 2 asks for 40x its mean: its full Newton step would be far larger than allowed
    targets = _means(readout, clean) * torch.tensor([1.1, 0.9, 40.0])
    guidance = ReadoutGuidance(readout, targets, 1.0, newton_steps=1, max_step_rms=0.5)
    batched = guidance.clean_change(clean, _identity)
    for row in range(3):
        alone = ReadoutGuidance(readout, targets[row : row + 1], 1.0, newton_steps=1)
        single = alone.clean_change(clean[row : row + 1], _identity)
        torch.testing.assert_close(batched[row : row + 1], single, rtol=1e-4, atol=1e-6)
    rms = batched.flatten(1).pow(2).mean(dim=1).sqrt()
    assert rms[2].item() == pytest.approx(0.5, rel=1e-4)
    assert rms[0].item() < 0.5 and rms[1].item() < 0.5
    # a larger target moves the mean up, a smaller one down
    moved = _means(readout, clean + batched) - _means(readout, clean)
    assert moved[0] > 0 > moved[1] and moved[2] > 0


def test_bounds_and_block_weights(readout: IntensityReadout) -> None:
    clean = random_latents(torch.Generator().manual_seed(4), 2, FRAMES, SIDE, SIDE)
    weight = torch.zeros(2, FRAMES, SIDE, SIDE)
    weight[..., :2] = 2.0  # half the blocks count, twice: the mean of what a forecast keeps
    guidance = ReadoutGuidance(readout, torch.full((2,), 0.6), 1.0, weight, newton_steps=4)
    bounds = (torch.tensor(-1.5), torch.tensor(1.5))
    moved = clean.clamp(-1.5, 1.5) + guidance.clean_change(
        clean.clamp(-1.5, 1.5), _identity, bounds
    )
    assert moved.min() >= -1.5 - 1e-6 and moved.max() <= 1.5 + 1e-6
    assert guidance.mean(moved).tolist() == pytest.approx([0.6, 0.6], rel=0.02)
    with pytest.raises(ValueError, match=">= 0"):
        ReadoutGuidance(readout, torch.zeros(2), -1.0)
    with pytest.raises(ValueError, match="3 values for 2 members"):
        ReadoutGuidance(readout, torch.zeros(2), torch.ones(3))


@pytest.mark.parametrize("sampler_class", [DDIMSampler, DDPMSampler])
def test_clean_weight_is_the_step_from_a_moved_clean_estimate(sampler_class: type) -> None:
    schedule = NoiseSchedule(TINY.diffusion)
    sampler = sampler_class(schedule, 10)
    generator = torch.Generator().manual_seed(5)
    sample, eps, change = (torch.randn(2, 3, 4, generator=generator) for _ in range(3))
    for t in sampler.timesteps:
        clean = sampler.clean_estimate(eps, t, sample)
        alpha_t = schedule.alpha_prod(t)
        shifted = sampler.step(
            eps, t, sample, torch.Generator().manual_seed(t), sampler.clean_weight(t) * change
        )
        if sampler_class is DDIMSampler:
            # DDIM keeps eps: the x_t whose clean estimate is x_0 + change under the same eps
            moved = math.sqrt(alpha_t) * (clean + change) + math.sqrt(1 - alpha_t) * eps
            expected = sampler.step(eps, t, moved, torch.Generator().manual_seed(t))
        else:
            # DDPM's posterior mean at the same x_t with x_0 + change
            moved_eps = (sample - math.sqrt(alpha_t) * (clean + change)) / math.sqrt(1 - alpha_t)
            expected = sampler.step(moved_eps, t, sample, torch.Generator().manual_seed(t))
        torch.testing.assert_close(shifted, expected, rtol=1e-4, atol=1e-4)
    # on the last step the sample becomes the clean estimate: a change of it is taken whole
    assert sampler.clean_weight(sampler.timesteps[-1]) == pytest.approx(1.0, rel=1e-6)


def test_readout_rejects_frames_of_another_channel_count(readout: IntensityReadout) -> None:
    with pytest.raises(ValueError, match=r"\(N, 4, h, w\)"):
        readout(torch.zeros(1, 3, 4, 4))
    assert readout(torch.zeros(2, 4, 4, 4)).shape == (2, 4, 4)
    assert bool((readout(torch.randn(2, 4, 4, 4) * 10) >= 0).all())
