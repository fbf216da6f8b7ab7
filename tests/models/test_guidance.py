"""Knowledge-alignment guidance with a briefly trained tiny alignment network.

Synthetic task: clean future latents z_0 have a per-frame offset m plus unit noise; the target
statistic is the per-frame mean of z_0 (a known function of the latents). The alignment net is
trained on noisy z_t ~ q(z_t | z_0) for a few dozen Adam steps. Sampling uses the exact noise
prediction for N(0, I) data as its denoiser, so the unguided samples have mean ~0 and any
movement toward the target comes from the guidance alone.
"""

from __future__ import annotations

import math

import pytest
import torch

from models.alignment import AlignmentNet
from models.config import TINY, AlignmentConfig
from models.guidance import IntensityGuidance
from models.schedulers import DDIMSampler, NoiseSchedule, randn_rows

# an even smaller alignment net than `tiny`'s (one level, per-frame convs): trains in seconds
CONFIG = TINY.replace(
    alignment=AlignmentConfig(base_units=8, depth=(1,), num_heads=2, norm_groups=4, conv_kernel_t=1)
)
LATENT_SIDE = 4  # 32 x 32 pixels
CHANNELS = TINY.vae.latent_channels
TARGET = 0.6  # per-frame latent mean the guidance asks for


def _synthetic_batch(batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    offset = torch.rand(batch, TINY.frames_out, 1, 1, 1, generator=generator) * 2 - 1
    shape = (batch, TINY.frames_out, CHANNELS, LATENT_SIDE, LATENT_SIDE)
    z0 = offset + torch.randn(shape, generator=generator)
    return z0, z0.mean(dim=(2, 3, 4))  # (B, T_out): the statistic to predict


def _context(batch: int, generator: torch.Generator) -> torch.Tensor:
    shape = (batch, TINY.frames_in, CHANNELS, LATENT_SIDE, LATENT_SIDE)
    return torch.randn(shape, generator=generator)


@pytest.fixture(scope="module")
def schedule() -> NoiseSchedule:
    return NoiseSchedule(TINY.diffusion)


@pytest.fixture(scope="module")
def trained_alignment(schedule: NoiseSchedule) -> AlignmentNet:
    # constructors draw from the global RNG; fork_rng restores it afterwards
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = AlignmentNet(CONFIG)
    generator = torch.Generator().manual_seed(1)
    optimiser = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        z0, target = _synthetic_batch(16, generator)
        noise = torch.randn(z0.shape, generator=generator)
        # emphasise the low-noise half, where the samples end up
        t = torch.randint(0, schedule.num_train_steps // 2, (z0.shape[0],), generator=generator)
        z_t = schedule.add_noise(z0, noise, t)
        loss = torch.nn.functional.mse_loss(net(z_t, t, _context(z0.shape[0], generator)), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    # offsets are U(-1, 1): predicting a constant gives an MSE of ~1/3
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:5]) / 5
    return net.eval().requires_grad_(False)


def _sample(
    schedule: NoiseSchedule,
    guidance: IntensityGuidance | None,
    context: torch.Tensor,
    seed: int = 0,
    steps: int = 10,
    eta: float = 0.0,
) -> torch.Tensor:
    sampler = DDIMSampler(schedule, steps, eta)
    generator = torch.Generator().manual_seed(seed)
    shape = (context.shape[0], TINY.frames_out, CHANNELS, LATENT_SIDE, LATENT_SIDE)
    sample = randn_rows(shape, generator)
    with torch.no_grad():
        for t in sampler.timesteps:
            # exact E[eps | z_t] for z_0 ~ N(0, I)
            eps = math.sqrt(1.0 - schedule.alpha_prod(t)) * sample
            shift = None
            if guidance is not None:
                shift = guidance.mean_shift(sample, t, context, sampler.guidance_weight(t))
            sample = sampler.step(eps, t, sample, generator, mean_shift=shift)
    return sample


def _predicted(net: AlignmentNet, sample: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(sample, torch.zeros(sample.shape[0], dtype=torch.long), context).mean(dim=1)


def test_trained_net_predicts_the_statistic(trained_alignment: AlignmentNet) -> None:
    generator = torch.Generator().manual_seed(11)
    z0, target = _synthetic_batch(64, generator)
    predicted = _predicted(trained_alignment, z0, _context(64, generator))
    correlation = torch.corrcoef(torch.stack([predicted, target.mean(dim=1)]))[0, 1]
    assert correlation > 0.7


def test_guidance_moves_samples_toward_target_monotonically(
    schedule: NoiseSchedule, trained_alignment: AlignmentNet
) -> None:
    members = 8
    context = _context(members, torch.Generator().manual_seed(5))
    target = torch.full((members,), TARGET)
    distances, true_means = [], []
    # a Newton step per sampler step: lambda ~ 1.2 asks to close the whole gap to first order (the
    # sampling undoes part of each shift, so 2.5 is what gets there; the weights of a
    # trajectory add up to ~0.83)
    for scale in (0.0, 0.5, 2.5):
        guidance = IntensityGuidance(trained_alignment, target, scale)
        sample = _sample(schedule, guidance, context)
        predicted = _predicted(trained_alignment, sample, context)
        distances.append((predicted - TARGET).abs().mean().item())
        true_means.append(sample.mean().item())
    assert distances[0] > distances[1] > distances[2], distances
    assert distances[2] < 0.25 * distances[0], distances
    # the latents themselves (not just A's opinion of them) move toward the target
    assert true_means[0] < true_means[1] < true_means[2] <= TARGET + 0.3, true_means


def test_zero_scale_equals_no_guidance_bit_for_bit(
    schedule: NoiseSchedule, trained_alignment: AlignmentNet
) -> None:
    context = _context(3, torch.Generator().manual_seed(6))
    target = torch.full((3,), TARGET)
    plain = _sample(schedule, None, context, seed=2, eta=1.0)
    zero = _sample(schedule, IntensityGuidance(trained_alignment, target, 0.0), context, 2, eta=1.0)
    assert torch.equal(plain, zero)
    # a member with lambda = 0 inside a guided batch is untouched as well
    mixed = IntensityGuidance(trained_alignment, target, torch.tensor([0.0, 50.0, 50.0]))
    guided = _sample(schedule, mixed, context, seed=2, eta=1.0)
    assert torch.equal(guided[0], plain[0])
    assert not torch.allclose(guided[1:], plain[1:])


def test_members_do_not_couple(trained_alignment: AlignmentNet) -> None:
    generator = torch.Generator().manual_seed(8)
    sample = torch.randn(
        4, TINY.frames_out, CHANNELS, LATENT_SIDE, LATENT_SIDE, generator=generator
    )
    context = _context(4, generator)
    targets = torch.tensor([0.1, 0.9, -0.5, 0.3])
    guidance = IntensityGuidance(trained_alignment, targets, 40.0)
    batched = guidance.mean_shift(sample, 400, context, weight=0.5)
    for row in range(4):
        alone = IntensityGuidance(trained_alignment, targets[row : row + 1], 40.0)
        single = alone.mean_shift(sample[row : row + 1], 400, context[row : row + 1], 0.5)
        torch.testing.assert_close(batched[row : row + 1], single, rtol=1e-4, atol=1e-7)
    # the shift is -lambda * w * grad |A - target|: it points along -sign(A - target) grad A
    assert batched.abs().sum() > 0


def test_guidance_is_off_without_scale_or_sigma(trained_alignment: AlignmentNet) -> None:
    sample = torch.zeros(2, TINY.frames_out, CHANNELS, LATENT_SIDE, LATENT_SIDE)
    context = torch.zeros(2, TINY.frames_in, CHANNELS, LATENT_SIDE, LATENT_SIDE)
    targets = torch.zeros(2)
    assert (
        IntensityGuidance(trained_alignment, targets, 0.0).mean_shift(sample, 10, context, 1.0)
        is None
    )
    assert (
        IntensityGuidance(trained_alignment, targets, 5.0).mean_shift(sample, 10, context, 0.0)
        is None
    )
    with pytest.raises(ValueError):
        IntensityGuidance(trained_alignment, targets, -1.0)
    with pytest.raises(ValueError):
        IntensityGuidance(trained_alignment, targets, torch.ones(3))


def test_the_same_lambda_steers_alike_at_10_and_50_steps(
    schedule: NoiseSchedule, trained_alignment: AlignmentNet
) -> None:
    members = 8
    context = _context(members, torch.Generator().manual_seed(6))
    target = torch.full((members,), TARGET)
    closed = []
    for steps in (10, 50):
        plain = _sample(schedule, None, context, steps=steps)
        guided = _sample(
            schedule, IntensityGuidance(trained_alignment, target, 0.6), context, steps=steps
        )
        before = (_predicted(trained_alignment, plain, context) - TARGET).abs().mean().item()
        after = (_predicted(trained_alignment, guided, context) - TARGET).abs().mean().item()
        closed.append(1.0 - after / before)
    # the fraction of the gap closed: the same to within a few points, and clearly non-zero
    assert closed[0] > 0.2 and closed[1] > 0.2, closed
    assert abs(closed[0] - closed[1]) < 0.1, closed
