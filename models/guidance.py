"""Knowledge-alignment guidance (PreDiff): steer sampling toward a requested rain intensity.

Two ways, chosen by `config.diffusion.guidance`:

- `ReadoutGuidance` ("readout"): at every step the denoiser's clean estimate x_0 takes a Newton
  step toward where the intensity readout (`models.intensity_readout`) of what it decodes to has
  the requested mean; the sampler's step is then taken from the moved x_0. On the last step x_0
  is the forecast, so a request reaches its target for any step count (small-v3.5's default).
- `IntensityGuidance` ("alignment"), PreDiff's own, below.

At each sampler step the transition mean of every ensemble member moves by a Newton step on the
alignment network's prediction,

    a = mean_T A(z_t, t, z_ctx),   g = grad_{z_t} a,
    mean_shift = -lambda * w_t * (a - target) * g / ||g||^2

where A is the alignment network (`models.alignment.AlignmentNet`: per-frame mean rain rate of the
clean future, in units of `config.intensity_scale_mm_h`) and w_t the sampler's
`guidance_weight(t)` (the weights of a trajectory add up to ~0.8 for any step count). To first order
a shift closes the fraction lambda * w_t of the gap between A's prediction and the target, so
lambda means the same for any step count, grid size or network: lambda ~ 1.2 asks to close the
whole gap over the trajectory. (The gradient step of the reference, -lambda sigma_t grad |a -
target|, scales with the gradient's size, which is ~1e-5 per latent value here: its lambda had to
be tuned per model and moved a 1.27 mm/h forecast to 1.35 for an 8 mm/h request.) Everything is
PER MEMBER: member i's shift depends on member i alone (the reference takes one norm over the
whole batch, which couples the members). A plug-in: the sampler is unchanged without it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def member_scales(scale: float | torch.Tensor, members: int) -> torch.Tensor:
    """lambda of each member, `(members,)` float32, from one value or one per member (>= 0)."""
    values = torch.as_tensor(scale, dtype=torch.float32).reshape(-1)
    if values.numel() not in (1, members):
        raise ValueError(f"scale has {values.numel()} values for {members} members")
    if bool((values < 0).any()):
        raise ValueError("guidance scale must be >= 0")
    return values.expand(members)


class IntensityGuidance:
    """Mean shift toward a per-member target of the future mean rain rate.

    Parameters
    ----------
    alignment_net: A(sample `(B, T_out, C, h, w)`, timestep `(B,)`, context `(B, T_in, C, h, w)`)
        -> `(B, T_out)`; must treat batch rows independently (no batch norm).
    target_norm (`(B,)` float): target mean rain rate of each member [mm h-1] divided by
        `config.intensity_scale_mm_h`.
    scale: lambda, a float for every member or a `(B,)` tensor (0 for members without a
        constraint). lambda = 0 gives exactly no shift.
    """

    def __init__(
        self,
        alignment_net: nn.Module,
        target_norm: torch.Tensor,
        scale: float | torch.Tensor,
    ) -> None:
        self.alignment_net = alignment_net
        self.target_norm = torch.as_tensor(target_norm, dtype=torch.float32).reshape(-1)
        self.scale = member_scales(scale, self.target_norm.numel())

    @property
    def active(self) -> bool:
        """False when every member's lambda is 0 (then `mean_shift` returns None)."""
        return bool((self.scale > 0).any())

    def gap(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        extrapolation: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """mean_T A(sample, t, context[, extrapolation]) - target per member, `(B,)`."""
        inputs = (sample, timestep, context) + (() if extrapolation is None else (extrapolation,))
        predicted = self.alignment_net(*inputs).mean(dim=1)
        return predicted - self.target_norm.to(predicted.device)

    def mean_shift(
        self,
        sample: torch.Tensor,
        t: int,
        context: torch.Tensor,
        weight: float,
        extrapolation: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """The shift of the transition mean at step `t`.

        Parameters
        ----------
        sample (`(B, T_out, C, h, w)`): what the alignment net reads at step t: the noisy
            latents z_t (scaled by `latent_scale`), or for a motion-aware model the sampler's
            state itself (the diffused residual).
        t: the current training step.
        context (`(B, T_in, C, h, w)`): encoded past latents.
        weight: the sampler's `guidance_weight(t)`.
        extrapolation (`(B, T_out, C, h, w)` or None): extrapolation latents (motion-aware).

        Returns
        -------
        `(B, T_out, C, h, w)` shift, or None when no member is guided (lambda = 0 everywhere)
        or weight = 0.
        """
        if not self.active or weight == 0.0:
            return None
        batch = sample.shape[0]
        if self.target_norm.numel() != batch:
            raise ValueError(f"{self.target_norm.numel()} targets for a batch of {batch}")
        timestep = torch.full((batch,), int(t), dtype=torch.long, device=sample.device)
        with torch.enable_grad():
            z_t = sample.detach().requires_grad_(True)
            gap = self.gap(z_t, timestep, context.detach(), extrapolation)
            # the sum's gradient w.r.t. z_i is member i's own: members stay independent
            (gradient,) = torch.autograd.grad(gap.sum(), z_t)
        rows = (-1, *([1] * (sample.ndim - 1)))
        norm2 = gradient.flatten(1).pow(2).sum(dim=1).clamp_min(1e-20).reshape(rows)
        scale = self.scale.to(device=sample.device, dtype=sample.dtype)
        scale = scale.expand(batch).reshape(rows)
        shift = -scale * weight * gap.detach().reshape(rows) * gradient / norm2
        # members with lambda = 0 get exactly 0 (0 * non-finite gradient would give NaN)
        return torch.where(scale > 0, shift, torch.zeros_like(shift))


class ReadoutGuidance:
    """Move the sampler's clean estimate toward a per-member target of the mean rain rate.

    With m(x) the mean over leads and pixels of the readout of the latents x decodes to (each
    block weighted as the forecast keeps it), every Newton step is

        x <- clamp(x - (m(x) - target) * g / ||g||^2),   g = grad_x m(x),

    the smallest change of x that closes the gap to first order. One Newton step per sampler
    step is enough, as the next sampler step starts from where it ended (measured with a
    first fit of small-v3.5's readout, 2 cases at 1 and 2x: the forecast means of 1 and 2
    steps agree to 0.2 %, at half the cost); the last sampler step, whose x_0 is the forecast,
    takes `final_newton_steps`. The change returned is `scale` times the total change: lambda
    = 1 asks for the target at every step, and the last step's x_0 is the forecast.
    Per member: member i's change depends on member i alone.

    Parameters
    ----------
    readout: `IntensityReadout`, latents `(N, C, h, w)` -> `(N, h, w)`.
    target_norm (`(B,)` float): target mean rain rate of each member [mm h-1] divided by
        `config.intensity_scale_mm_h`.
    scale: lambda in [0, 1], a float for every member or a `(B,)` tensor (0 for members
        without a constraint); values above 1 are taken as 1 (they would overshoot).
    block_weight (`(B, T_out, h, w)` or None): the share of each latent block the forecast's
        mean counts (the rain mask times the covered pixels, over the covered fraction).
    newton_steps, final_newton_steps: Newton steps per sampler step, and on the last one.
    max_step_rms: the largest RMS change of a member's clean estimate per Newton step (its
        units have unit variance): where the readout barely responds (a dry forecast asked
        for rain) a full Newton step would be huge and overshoot; the trust region spreads
        it over the sampler's steps instead.
    """

    def __init__(
        self,
        readout: nn.Module,
        target_norm: torch.Tensor,
        scale: float | torch.Tensor,
        block_weight: torch.Tensor | None = None,
        newton_steps: int = 1,
        final_newton_steps: int = 3,
        max_step_rms: float = 0.5,
    ) -> None:
        self.readout = readout
        self.target_norm = torch.as_tensor(target_norm, dtype=torch.float32).reshape(-1)
        self.scale = member_scales(scale, self.target_norm.numel()).clamp(max=1.0)
        self.block_weight = block_weight
        self.newton_steps = int(newton_steps)
        self.final_newton_steps = int(final_newton_steps)
        self.max_step_rms = float(max_step_rms)

    @property
    def active(self) -> bool:
        """False when every member's lambda is 0 (then `clean_change` returns None)."""
        return bool((self.scale > 0).any())

    def mean(self, latents: torch.Tensor) -> torch.Tensor:
        """`(B,)` weighted mean readout of latents `(B, T_out, C, h, w)` (the decoder's input)."""
        batch, frames, _, height, width = latents.shape
        blocks = self.readout(latents.flatten(0, 1)).reshape(batch, frames, height, width)
        if self.block_weight is not None:
            blocks = blocks * self.block_weight
        return blocks.mean(dim=(1, 2, 3))

    def clean_change(
        self,
        clean: torch.Tensor,
        to_latents: Callable[[torch.Tensor], torch.Tensor],
        bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
        final: bool = False,
    ) -> torch.Tensor | None:
        """The change of the clean estimate, `(B, ...)` like `clean`.

        Parameters
        ----------
        clean (`(B, T_out, C, h, w)`): the sampler's clean estimate, in its own units (e.g. the
            scaled residual, `models.residual`).
        to_latents: clean estimate -> the decoder's input latents, differentiable.
        bounds: (lower, upper) clamp of the clean estimate (the sampler's), or None.
        final: the sampler's last step (`final_newton_steps` Newton steps).

        Returns
        -------
        The change, 0 for members with lambda 0; None when no member is guided.
        """
        if not self.active:
            return None
        batch = clean.shape[0]
        if self.target_norm.numel() != batch:
            raise ValueError(f"{self.target_norm.numel()} targets for a batch of {batch}")
        rows = (-1, *([1] * (clean.ndim - 1)))
        target = self.target_norm.to(clean.device)
        moved = clean.detach()
        for _ in range(self.final_newton_steps if final else self.newton_steps):
            with torch.enable_grad():
                x = moved.requires_grad_(True)
                mean = self.mean(to_latents(x))
                # the sum's gradient w.r.t. member i is member i's own
                (gradient,) = torch.autograd.grad(mean.sum(), x)
            norm2 = gradient.flatten(1).pow(2).sum(dim=1).clamp_min(1e-20).reshape(rows)
            gap = (mean.detach() - target).reshape(rows)
            step = gap * gradient / norm2
            rms = step.flatten(1).pow(2).mean(dim=1).sqrt().reshape(rows)
            step = step * (self.max_step_rms / rms.clamp_min(self.max_step_rms))
            moved = moved.detach() - step
            if bounds is not None:
                moved = torch.maximum(torch.minimum(moved, bounds[1]), bounds[0])
        scale = self.scale.to(device=clean.device, dtype=clean.dtype).reshape(rows)
        change = scale * (moved - clean)
        # members with lambda = 0 get exactly 0 (their Newton steps may not be finite)
        return torch.where(scale > 0, change, torch.zeros_like(change))
