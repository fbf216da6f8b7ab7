"""Noise schedule and samplers of the latent diffusion: pure tensor math, never calling a network.

The forward process (Ho et al. 2020) adds Gaussian noise to a clean latent `x_0`:

    q(x_t | x_0) = N(sqrt(alpha_prod_t) x_0, (1 - alpha_prod_t) I)
    alpha_prod_t = prod_{s<=t} (1 - beta_s)

with the "scaled linear" schedule beta = linspace(sqrt(beta_start), sqrt(beta_end), T) ** 2.
The network predicts the noise `eps` (epsilon-parameterisation); a sampler turns `eps` at `x_t`
into `x_prev`. Both samplers below walk a sub-sequence of the training steps chosen by
`set_timesteps(n)`:

- `DDPMSampler`: ancestral sampling from the posterior q(x_prev | x_t, x_0 = pred_original_sample).
- `DDIMSampler` (Song et al. 2021, eq. 12): deterministic for eta = 0, ancestral-like for eta = 1.

Every `step` accepts a `mean_shift` that is added to the transition mean before the noise is drawn
(the knowledge-alignment guidance of `models.guidance` is one such shift); `guidance_weight(t)`
scales it so that a whole trajectory's shifts add up alike for any step count. It also accepts
`x0_bounds`: the predicted clean sample is clamped to them and the noise prediction made consistent
with the clamped value (diffusers' `clip_sample`).

Randomness comes only from the `torch.Generator`s passed in; see `randn_rows` for how one
generator per request keeps a request's noise the same whether it is sampled alone or batched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from models.config import DiffusionConfig

GeneratorArg = torch.Generator | Sequence[torch.Generator] | None
# (lower, upper) bounds of the predicted clean sample, each a float or a tensor that broadcasts
Bounds = tuple[torch.Tensor | float, torch.Tensor | float]


class NoiseSchedule:
    """The fixed beta / alpha tables of the forward process.

    Parameters
    ----------
    config:
        `num_train_steps`, `beta_start`, `beta_end` and `beta_schedule` ("scaled_linear" or
        "linear") are used.

    Attributes
    ----------
    betas, alphas, alphas_cumprod (`(num_train_steps,)` float64 tensors on the CPU):
        beta_t, alpha_t = 1 - beta_t and alpha_prod_t = prod_{s<=t} alpha_s for t = 0 .. T-1.
    """

    def __init__(self, config: DiffusionConfig | None = None) -> None:
        config = config or DiffusionConfig()
        self.num_train_steps = int(config.num_train_steps)
        if config.beta_schedule == "scaled_linear":
            # linear in sqrt(beta), then squared (the latent-diffusion schedule)
            self.betas = (
                torch.linspace(
                    math.sqrt(config.beta_start),
                    math.sqrt(config.beta_end),
                    self.num_train_steps,
                    dtype=torch.float64,
                )
                ** 2
            )
        elif config.beta_schedule == "linear":
            self.betas = torch.linspace(
                config.beta_start, config.beta_end, self.num_train_steps, dtype=torch.float64
            )
        else:
            raise ValueError(
                f"unknown beta_schedule {config.beta_schedule!r}; "
                "choose 'scaled_linear' or 'linear'"
            )
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)

    def alpha_prod(self, t: int) -> float:
        """alpha_prod_t as a Python float; t = -1 means "before the first step" (1.0)."""
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x_0) with the given noise: sqrt(a_t) x_0 + sqrt(1 - a_t) eps.

        Parameters
        ----------
        original_samples (`(B, ...)` float): clean latents x_0.
        noise (`(B, ...)` float): standard normal noise eps, same shape.
        timesteps (`(B,)` int64): training step t of each row, in [0, num_train_steps).

        Returns
        -------
        (`(B, ...)`, dtype and device of `original_samples`): the noisy latents x_t.
        """
        alpha_prod_t = self.alphas_cumprod[timesteps.cpu()].to(
            device=original_samples.device, dtype=original_samples.dtype
        )
        alpha_prod_t = alpha_prod_t.reshape(-1, *([1] * (original_samples.ndim - 1)))
        return alpha_prod_t.sqrt() * original_samples + (1.0 - alpha_prod_t).sqrt() * noise

    def trailing_timesteps(self, num_steps: int) -> list[int]:
        """`num_steps` training steps from T-1 down, evenly spaced, always starting at T-1.

        "Trailing" spacing: the first step starts from pure noise even when `num_steps` is 1.
        """
        if not 1 <= num_steps <= self.num_train_steps:
            raise ValueError(
                f"sampling steps must be in [1, {self.num_train_steps}], got {num_steps}"
            )
        stride = self.num_train_steps / num_steps
        return [round(self.num_train_steps - i * stride) - 1 for i in range(num_steps)]


def randn_rows(
    shape: Sequence[int],
    generator: GeneratorArg,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal noise of `shape`, drawn on the CPU and moved to `device`.

    `generator` is one `torch.Generator` for the whole tensor, or a sequence with one generator
    per row (`len == shape[0]`). Consecutive rows that share a generator object are drawn in one
    call, so a request whose members occupy consecutive rows gets the same noise alone or
    batched with other requests. Drawing on the CPU makes a seed give the same noise on any device.
    """
    shape = tuple(int(s) for s in shape)
    if generator is None or isinstance(generator, torch.Generator):
        noise = torch.randn(shape, generator=generator, dtype=torch.float32)
        return noise.to(device=device, dtype=dtype)
    generators = list(generator)
    if len(generators) != shape[0]:
        raise ValueError(f"{len(generators)} generators for {shape[0]} rows")
    blocks = []
    start = 0
    while start < shape[0]:
        stop = start + 1
        while stop < shape[0] and generators[stop] is generators[start]:
            stop += 1
        blocks.append(
            torch.randn(
                (stop - start, *shape[1:]), generator=generators[start], dtype=torch.float32
            )
        )
        start = stop
    return torch.cat(blocks).to(device=device, dtype=dtype)


class _Sampler:
    """Timestep bookkeeping shared by the samplers."""

    def __init__(self, schedule: NoiseSchedule) -> None:
        self.schedule = schedule
        self.timesteps: list[int] = []
        self._prev: dict[int, int] = {}

    def set_timesteps(self, num_steps: int) -> None:
        """Choose the `num_steps` training steps to walk, from T-1 down (see `.timesteps`)."""
        self.timesteps = self.schedule.trailing_timesteps(num_steps)
        self._prev = dict(zip(self.timesteps, [*self.timesteps[1:], -1], strict=True))

    def prev_timestep(self, t: int) -> int:
        """The step the sampler goes to from `t`; -1 after the last step (clean sample)."""
        try:
            return self._prev[int(t)]
        except KeyError:
            raise ValueError(
                f"timestep {t} is not in the sampler's timesteps; call set_timesteps"
            ) from None

    def _alpha_prods(self, t: int) -> tuple[float, float]:
        return self.schedule.alpha_prod(int(t)), self.schedule.alpha_prod(self.prev_timestep(t))

    def posterior_std(self, t: int) -> float:
        """Std of the DDPM posterior q(x_prev | x_t, x_0) for the jump t -> prev_t.

        sigma_t^2 = (1 - alpha_prod_prev) / (1 - alpha_prod_t)
                    * (1 - alpha_prod_t / alpha_prod_prev)
        (Ho et al. eq. 7 with beta_t replaced by the jump's 1 - alpha_prod_t / alpha_prod_prev).
        """
        alpha_prod_t, alpha_prod_prev = self._alpha_prods(t)
        beta_jump = 1.0 - alpha_prod_t / alpha_prod_prev
        return math.sqrt(max((1.0 - alpha_prod_prev) / (1.0 - alpha_prod_t) * beta_jump, 0.0))

    def guidance_weight(self, t: int) -> float:
        """The weight of the guidance mean shift at step `t`, independent of the step count.

        w_t = sqrt(alpha_prod_prev) * (sqrt(1 - alpha_prod_t) - sqrt(1 - alpha_prod_prev)).
        A shift d of x_prev moves every later clean-sample prediction by d / sqrt(alpha_prod_prev),
        so the shifts of a whole trajectory move the final sample by sum_k w_k / sqrt(a_prev_k)
        = sqrt(1 - alpha_prod_T) - 0, about 1 for every step count: the same lambda steers 10
        and 50 steps alike. (The DDPM posterior std used before grows with the jump, and so
        steered ~3x differently at 10 and 50 steps.) The same for every sampler and eta, and
        non-zero on the last jump, so a one-step sampler is guided too.
        """
        alpha_prod_t, alpha_prod_prev = self._alpha_prods(t)
        return math.sqrt(alpha_prod_prev) * (
            math.sqrt(1.0 - alpha_prod_t) - math.sqrt(max(1.0 - alpha_prod_prev, 0.0))
        )

    def clean_estimate(
        self,
        eps: torch.Tensor,
        t: int,
        sample: torch.Tensor,
        x0_bounds: Bounds | None = None,
    ) -> torch.Tensor:
        """The predicted clean sample x_0 `(B, ...)` at (sample, t), clamped as `step` does."""
        alpha_prod_t = self.schedule.alpha_prod(int(t))
        return self._pred_original_sample(eps, sample, alpha_prod_t, x0_bounds)[0]

    def clean_weight(self, t: int) -> float:
        """d(transition mean) / d(predicted x_0) of the step from `t`: a mean shift of
        `clean_weight(t) * d` is the step taken from x_0 + d instead of x_0 (1 on the last
        step of DDIM, so there the sample becomes x_0 + d)."""
        raise NotImplementedError

    @staticmethod
    def _draw(
        prev_mean: torch.Tensor,
        std_dev_t: float,
        generator: GeneratorArg,
        mean_shift: torch.Tensor | None,
    ) -> torch.Tensor:
        """x_prev ~ N(prev_mean + mean_shift, std_dev_t^2), all `(B, ...)`; no draw when std is 0.

        The shift moves the mean before the noise is added, so guidance steers a deterministic
        sampler (eta = 0) just as it steers an ancestral one.
        """
        if mean_shift is not None:
            prev_mean = prev_mean + mean_shift
        if std_dev_t == 0.0:
            return prev_mean
        noise = randn_rows(prev_mean.shape, generator, prev_mean.device, prev_mean.dtype)
        return prev_mean + std_dev_t * noise

    @staticmethod
    def _pred_original_sample(
        eps: torch.Tensor,
        sample: torch.Tensor,
        alpha_prod_t: float,
        x0_bounds: Bounds | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_0, eps) at x_t: x_0 = (x_t - sqrt(1 - alpha_prod_t) eps) / sqrt(alpha_prod_t), the
        inverse of add_noise; with bounds, x_0 is clamped and eps recomputed from it so that
        the step's "direction to x_t" agrees with the clamped x_0."""
        original = (sample - math.sqrt(1.0 - alpha_prod_t) * eps) / math.sqrt(alpha_prod_t)
        if x0_bounds is None:
            return original, eps
        lower, upper = (
            torch.as_tensor(b, dtype=original.dtype, device=original.device) for b in x0_bounds
        )
        original = torch.maximum(torch.minimum(original, upper), lower)
        eps = (sample - math.sqrt(alpha_prod_t) * original) / math.sqrt(1.0 - alpha_prod_t)
        return original, eps


class DDPMSampler(_Sampler):
    """Ancestral sampling (Ho et al. 2020) over a trailing sub-sequence of the training steps.

    Each step draws x_prev ~ N(mu, sigma_t^2) with the posterior mean of q(x_prev | x_t, x_0)
    evaluated at x_0 = pred_original_sample. With all 1000 steps this is the original DDPM.
    """

    def __init__(self, schedule: NoiseSchedule, num_steps: int | None = None) -> None:
        super().__init__(schedule)
        self.set_timesteps(num_steps or schedule.num_train_steps)

    def step(
        self,
        eps: torch.Tensor,
        t: int,
        sample: torch.Tensor,
        generator: GeneratorArg = None,
        mean_shift: torch.Tensor | None = None,
        x0_bounds: Bounds | None = None,
    ) -> torch.Tensor:
        """One ancestral step x_t -> x_prev.

        Parameters
        ----------
        eps (`(B, ...)`): predicted noise at (sample, t).
        t: current training step, one of `.timesteps`.
        sample (`(B, ...)`): x_t.
        generator: see `randn_rows`.
        mean_shift (`(B, ...)` or None): added to the transition mean before the noise.
        x0_bounds: (lower, upper) clamp of the predicted clean sample, or None.

        Returns
        -------
        (`(B, ...)`): x_prev.
        """
        alpha_prod_t, alpha_prod_prev = self._alpha_prods(t)
        alpha_jump = alpha_prod_t / alpha_prod_prev  # alpha_t of the jump t -> prev_t
        pred_original_sample, _ = self._pred_original_sample(eps, sample, alpha_prod_t, x0_bounds)
        # posterior mean, Ho et al. eq. 7:
        # mu = sqrt(a_prev) beta / (1 - a_t) x_0 + sqrt(alpha) (1 - a_prev) / (1 - a_t) x_t
        coef_original = self.clean_weight(t)
        coef_current = math.sqrt(alpha_jump) * (1.0 - alpha_prod_prev) / (1.0 - alpha_prod_t)
        prev_mean = coef_original * pred_original_sample + coef_current * sample
        return self._draw(prev_mean, self.posterior_std(t), generator, mean_shift)

    def clean_weight(self, t: int) -> float:
        """The posterior mean's coefficient of x_0: sqrt(a_prev) beta / (1 - a_t)."""
        alpha_prod_t, alpha_prod_prev = self._alpha_prods(t)
        beta_jump = 1.0 - alpha_prod_t / alpha_prod_prev
        return math.sqrt(alpha_prod_prev) * beta_jump / (1.0 - alpha_prod_t)


class DDIMSampler(_Sampler):
    """DDIM (Song et al. 2021) with configurable steps and eta.

    eta = 0: deterministic (the noise only enters through the initial sample);
    eta = 1: the noise std equals the DDPM posterior std of each jump.
    """

    def __init__(self, schedule: NoiseSchedule, num_steps: int = 50, eta: float = 0.0) -> None:
        super().__init__(schedule)
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        self.eta = float(eta)
        self.set_timesteps(num_steps)

    def step(
        self,
        eps: torch.Tensor,
        t: int,
        sample: torch.Tensor,
        generator: GeneratorArg = None,
        mean_shift: torch.Tensor | None = None,
        x0_bounds: Bounds | None = None,
    ) -> torch.Tensor:
        """One DDIM step x_t -> x_prev (Song et al. eq. 12).

        Parameters and return as in `DDPMSampler.step`; with eta = 0 no noise is drawn and
        `generator` is not used.
        """
        alpha_prod_t, alpha_prod_prev = self._alpha_prods(t)
        pred_original_sample, eps = self._pred_original_sample(eps, sample, alpha_prod_t, x0_bounds)
        # sigma_t(eta) = eta * sqrt((1 - a_prev) / (1 - a_t)) * sqrt(1 - a_t / a_prev)
        std_dev_t = self.eta * self.posterior_std(t)
        # "direction pointing to x_t": sqrt(1 - a_prev - sigma_t^2) * eps
        direction = math.sqrt(max(1.0 - alpha_prod_prev - std_dev_t**2, 0.0)) * eps
        prev_mean = math.sqrt(alpha_prod_prev) * pred_original_sample + direction
        return self._draw(prev_mean, std_dev_t, generator, mean_shift)

    def clean_weight(self, t: int) -> float:
        """sqrt(a_prev), the coefficient of x_0 at a fixed eps (`step` keeps the predicted eps
        when x_0 moves)."""
        return math.sqrt(self._alpha_prods(t)[1])


def make_sampler(
    config: DiffusionConfig,
    schedule: NoiseSchedule | None = None,
    num_steps: int | None = None,
    eta: float | None = None,
) -> DDPMSampler | DDIMSampler:
    """The sampler named by `config.sampler` ("ddim" or "ddpm") with its configured defaults."""
    schedule = schedule or NoiseSchedule(config)
    steps = int(num_steps if num_steps is not None else config.sampling_steps)
    if config.sampler == "ddim":
        return DDIMSampler(schedule, steps, config.eta if eta is None else eta)
    if config.sampler == "ddpm":
        return DDPMSampler(schedule, steps)
    raise ValueError(f"unknown sampler {config.sampler!r}; choose 'ddim' or 'ddpm'")
