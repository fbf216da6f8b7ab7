"""Knowledge-alignment guidance (PreDiff): steer sampling toward a requested rain intensity.

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

import torch
from torch import nn


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
        self.scale = torch.as_tensor(scale, dtype=torch.float32).reshape(-1)
        if self.scale.numel() not in (1, self.target_norm.numel()):
            raise ValueError(
                f"scale has {self.scale.numel()} values for {self.target_norm.numel()} members"
            )
        if bool((self.scale < 0).any()):
            raise ValueError("guidance scale must be >= 0")

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
