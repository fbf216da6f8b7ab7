"""Noise schedule and samplers: table values, add_noise, DDIM/DDPM stepping and reproducibility."""

from __future__ import annotations

import math

import pytest
import torch

from models.config import DiffusionConfig
from models.schedulers import DDIMSampler, DDPMSampler, NoiseSchedule, make_sampler, randn_rows


@pytest.fixture(scope="module")
def schedule() -> NoiseSchedule:
    return NoiseSchedule(DiffusionConfig())


def _analytic_eps(sample: torch.Tensor, alpha_prod_t: float) -> torch.Tensor:
    # the exact noise prediction E[eps | x_t] when the data are x_0 ~ N(0, I):
    # x_t ~ N(0, I) and eps | x_t has mean sqrt(1 - alpha_prod_t) x_t
    return math.sqrt(1.0 - alpha_prod_t) * sample


def _sample(sampler, schedule, shape, generator, eta_generator=None):
    sample = randn_rows(shape, generator)
    for t in sampler.timesteps:
        eps = _analytic_eps(sample, schedule.alpha_prod(t))
        sample = sampler.step(eps, t, sample, eta_generator or generator)
    return sample


def test_schedule_tables(schedule: NoiseSchedule) -> None:
    assert schedule.betas.shape == (1000,)
    assert schedule.betas[0].item() == pytest.approx(1e-4, rel=1e-12)
    assert schedule.betas[-1].item() == pytest.approx(2e-2, rel=1e-12)
    # scaled linear: sqrt(beta) is linear in t
    sqrt_betas = schedule.betas.sqrt()
    assert torch.allclose(sqrt_betas.diff(), sqrt_betas.diff()[0].expand(999), rtol=1e-9)
    assert bool((schedule.alphas_cumprod.diff() < 0).all())
    assert 0 < schedule.alphas_cumprod[-1].item() < 1e-3 < schedule.alphas_cumprod[0].item() < 1


def test_linear_schedule_and_unknown_name() -> None:
    linear = NoiseSchedule(DiffusionConfig(beta_schedule="linear"))
    assert torch.allclose(linear.betas.diff(), linear.betas.diff()[0].expand(999), rtol=1e-9)
    with pytest.raises(ValueError, match="beta_schedule"):
        NoiseSchedule(DiffusionConfig(beta_schedule="cosine"))


def test_add_noise_matches_closed_form(schedule: NoiseSchedule) -> None:
    generator = torch.Generator().manual_seed(1)
    x0 = torch.randn(3, 2, 4, 8, 8, generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    t = torch.tensor([0, 500, 999])
    noisy = schedule.add_noise(x0, noise, t)
    for row, step in enumerate(t.tolist()):
        a = schedule.alphas_cumprod[step].item()
        expected = math.sqrt(a) * x0[row] + math.sqrt(1 - a) * noise[row]
        torch.testing.assert_close(noisy[row], expected)
    # at t = 999 almost all signal is gone
    assert torch.corrcoef(torch.stack([noisy[2].flatten(), noise[2].flatten()]))[0, 1] > 0.99


def test_timesteps_trailing(schedule: NoiseSchedule) -> None:
    sampler = DDIMSampler(schedule, num_steps=5)
    assert sampler.timesteps == [999, 799, 599, 399, 199]
    sampler.set_timesteps(1)
    assert sampler.timesteps == [999]
    sampler.set_timesteps(1000)
    assert sampler.timesteps == list(range(999, -1, -1))
    with pytest.raises(ValueError):
        sampler.set_timesteps(0)


def test_ddim_one_step_recovers_x0_exactly(schedule: NoiseSchedule) -> None:
    # with the true noise, one deterministic DDIM jump to t = -1 returns x_0
    generator = torch.Generator().manual_seed(2)
    x0 = torch.randn(2, 6, 4, 8, 8, generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    sampler = DDIMSampler(schedule, num_steps=1)
    noisy = schedule.add_noise(x0, noise, torch.tensor([999, 999]))
    torch.testing.assert_close(sampler.step(noise, 999, noisy), x0, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sampler_class", [DDIMSampler, DDPMSampler])
def test_x0_bounds_clamp_the_predicted_clean_sample(schedule, sampler_class) -> None:
    generator = torch.Generator().manual_seed(5)
    x0 = 3.0 * torch.randn(2, 6, 4, 8, 8, generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    sampler = sampler_class(schedule, num_steps=1)
    noisy = schedule.add_noise(x0, noise, torch.tensor([999, 999]))
    low = torch.tensor([-1.0, -0.5, -2.0, 0.0]).reshape(1, 1, 4, 1, 1)
    # the last jump (to t = -1) returns the clean sample: the clamped one
    result = sampler.step(noise, 999, noisy, generator, x0_bounds=(low, 1.0))
    torch.testing.assert_close(result, x0.clamp(max=1.0).maximum(low), rtol=1e-4, atol=1e-4)
    inside = sampler.step(noise, 999, noisy, generator, x0_bounds=(-100.0, 100.0))
    torch.testing.assert_close(inside, x0, rtol=1e-4, atol=1e-4)


def test_ddim_x0_bounds_keep_eps_consistent(schedule: NoiseSchedule) -> None:
    # a mid-schedule DDIM jump with bounds that pin x_0 to c lands on the forward process's
    # point for x_0 = c and the noise implied by (x_t, c): sqrt(a_prev) c + sqrt(1-a_prev) eps'
    generator = torch.Generator().manual_seed(6)
    sample = torch.randn(1, 6, 4, 8, 8, generator=generator)
    eps = torch.randn(sample.shape, generator=generator)
    sampler = DDIMSampler(schedule, num_steps=4)
    t = sampler.timesteps[1]
    a_t, a_prev = schedule.alpha_prod(t), schedule.alpha_prod(sampler.prev_timestep(t))
    result = sampler.step(eps, t, sample, x0_bounds=(0.5, 0.5))
    implied = (sample - math.sqrt(a_t) * 0.5) / math.sqrt(1 - a_t)
    expected = math.sqrt(a_prev) * 0.5 + math.sqrt(1 - a_prev) * implied
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-5)


def test_ddim_seeds(schedule: NoiseSchedule) -> None:
    shape = (4, 6, 4, 8, 8)
    for steps in (1, 50):
        sampler = DDIMSampler(schedule, num_steps=steps, eta=0.5)
        first = _sample(sampler, schedule, shape, torch.Generator().manual_seed(7))
        again = _sample(sampler, schedule, shape, torch.Generator().manual_seed(7))
        other = _sample(sampler, schedule, shape, torch.Generator().manual_seed(8))
        assert torch.equal(first, again)
        assert not torch.allclose(first, other)
        assert torch.isfinite(first).all()


def test_samplers_reach_the_data_distribution(schedule: NoiseSchedule) -> None:
    # with the exact eps of N(0, I) data every sampler ends at unit variance as steps grow
    # (coarse steps lose some variance: the x_0 estimate ignores its own uncertainty)
    shape = (64, 6, 4, 8, 8)
    samplers = {
        "ddim": DDIMSampler(schedule, num_steps=200, eta=0.0),
        "ddim_eta1": DDIMSampler(schedule, num_steps=200, eta=1.0),
        "ddpm": DDPMSampler(schedule, num_steps=200),
    }
    for name, sampler in samplers.items():
        result = _sample(sampler, schedule, shape, torch.Generator().manual_seed(3))
        assert abs(result.std().item() - 1.0) < 0.03, name
        assert abs(result.mean().item()) < 0.03, name


def test_ddim_eta1_equals_ddpm(schedule: NoiseSchedule) -> None:
    # Song et al.: eta = 1 makes DDIM's transition the DDPM posterior
    shape = (3, 6, 4, 8, 8)
    ddim = _sample(
        DDIMSampler(schedule, 20, 1.0), schedule, shape, torch.Generator().manual_seed(6)
    )
    ddpm = _sample(DDPMSampler(schedule, 20), schedule, shape, torch.Generator().manual_seed(6))
    torch.testing.assert_close(ddim, ddpm, rtol=1e-5, atol=1e-5)


def test_ddpm_full_schedule_runs(schedule: NoiseSchedule) -> None:
    sampler = DDPMSampler(schedule)
    assert len(sampler.timesteps) == 1000
    result = _sample(sampler, schedule, (2, 1, 1, 4, 4), torch.Generator().manual_seed(4))
    assert result.shape == (2, 1, 1, 4, 4) and torch.isfinite(result).all()


def test_mean_shift_moves_the_mean_only(schedule: NoiseSchedule) -> None:
    sampler = DDIMSampler(schedule, num_steps=5, eta=1.0)
    sample = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(5))
    eps = 0.5 * sample
    shift = torch.full_like(sample, 0.25)
    t = sampler.timesteps[1]
    plain = sampler.step(eps, t, sample, torch.Generator().manual_seed(9))
    shifted = sampler.step(eps, t, sample, torch.Generator().manual_seed(9), mean_shift=shift)
    torch.testing.assert_close(shifted - plain, shift)


def test_guidance_weights_add_up_alike_for_any_step_count(schedule: NoiseSchedule) -> None:
    # a shift d of x_prev moves the final sample by d / sqrt(alpha_prod_prev): the weights so
    # divided must sum to the same total whatever the number of steps
    totals = []
    for steps in (1, 4, 10, 50):
        sampler = DDIMSampler(schedule, num_steps=steps, eta=0.0)
        total = 0.0
        for t in sampler.timesteps:
            prev = sampler.prev_timestep(t)
            a_prev = schedule.alpha_prod(prev)
            weight = sampler.guidance_weight(t)
            assert weight > 0
            assert DDPMSampler(schedule, num_steps=steps).guidance_weight(t) == weight
            total += weight / math.sqrt(a_prev)
        totals.append(total)
    expected = math.sqrt(1 - schedule.alpha_prod(schedule.num_train_steps - 1))
    assert totals == pytest.approx([expected] * 4, rel=1e-6)


def test_per_row_generators_batch_like_alone() -> None:
    shape = (5, 2, 3)
    first, second = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    batched = randn_rows(shape, [first] * 2 + [second] * 3)
    alone_first = randn_rows((2, 2, 3), torch.Generator().manual_seed(1))
    alone_second = randn_rows((3, 2, 3), torch.Generator().manual_seed(2))
    assert torch.equal(batched, torch.cat([alone_first, alone_second]))
    with pytest.raises(ValueError):
        randn_rows(shape, [first])


def test_make_sampler_follows_config() -> None:
    assert isinstance(make_sampler(DiffusionConfig(sampler="ddim", sampling_steps=7)), DDIMSampler)
    ddpm = make_sampler(DiffusionConfig(sampler="ddpm"), num_steps=20)
    assert isinstance(ddpm, DDPMSampler) and len(ddpm.timesteps) == 20
    with pytest.raises(ValueError, match="sampler"):
        make_sampler(DiffusionConfig(sampler="euler"))
