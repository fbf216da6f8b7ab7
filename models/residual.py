"""What the diffusion model diffuses: the future latents, or their scaled residual from an origin.

Training (`models.training.ldm`) and sampling (`models.pipeline`) use the same mapping, so the
two cannot drift apart:

- plain (`predict_residual: false`): x = z_future
- residual from the last past latent (`predict_residual: true`): x = z_future - z_context[-1]
- motion-aware (`extrapolation: true`): x = (z_future - z_extrapolation) / s_lead, where
  z_extrapolation are the latents of the Lucas-Kanade extrapolation nowcast of each lead and
  s_lead the per-lead std of that residual in training (`residual_scale`), so that x has unit
  variance at every lead as the noise schedule assumes.

All latents are scaled (`latent_scale`) and shaped `(B, T, C, h, w)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.config import DiffusionConfig


@dataclass(frozen=True)
class ResidualMap:
    """x = (z - origin) / scale and back.

    origin: `(B, T_out, C, h, w)`, `(B, 1, C, h, w)` or a 0-d zero tensor.
    scale: `(1, T_out, 1, 1, 1)` or a 0-d one tensor.
    """

    origin: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def for_config(
        cls,
        config: DiffusionConfig,
        context: torch.Tensor,
        extrapolation: torch.Tensor | None = None,
    ) -> ResidualMap:
        """The map of a model with `config`, for `context` `(B, T_in, C, h, w)` and, for a
        motion-aware model, the `extrapolation` latents `(B, T_out, C, h, w)`."""
        one = context.new_ones(())
        if config.extrapolation:
            if extrapolation is None:
                raise ValueError("a motion-aware model needs the extrapolation latents")
            scale = one
            if config.residual_scale is not None:
                scale = torch.tensor(config.residual_scale, dtype=context.dtype)
                scale = scale.to(context.device).reshape(1, -1, 1, 1, 1)
            return cls(extrapolation, scale)
        if config.predict_residual:
            return cls(context[:, -1:], one)
        return cls(context.new_zeros(()), one)

    def to_diffused(self, latents: torch.Tensor) -> torch.Tensor:
        """Future latents -> the diffused quantity x."""
        return (latents - self.origin) / self.scale

    def to_latents(self, diffused: torch.Tensor) -> torch.Tensor:
        """The diffused quantity x -> future latents."""
        return self.origin + self.scale * diffused

    def bounds(self, low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A latent range (`low` <= z <= `high`, broadcastable) in diffused units."""
        return self.to_diffused(low), self.to_diffused(high)
