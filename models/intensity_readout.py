"""Intensity readout R(z): the rain rate a latent frame decodes to, per latent pixel.

A few convolutions over one latent frame `(C, h, w)` (the decoder's input: unscaled latents)
that predict the mean rain rate of each latent pixel's 8 x 8 block of the decoded frame, in
mm h-1 / `config.intensity_scale_mm_h`. It is trained on what the decoder makes of real and of
sampled latents (`models.training.readout`), so the mean of its map is the mean the forecast will
have, and it is cheap to differentiate: the readout guidance (`models.guidance.ReadoutGuidance`)
takes its gradient at every sampler step. Why not the decoder itself: 240 decoded frames with
their gradient at every step would cost more than the whole forecast; the readout costs ~1 %.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.config import ModelConfig


class IntensityReadout(nn.Module):
    """Latent frames `(N, C, h, w)` -> `(N, h, w)` block-mean rain rate / intensity scale (>= 0).

    Receptive field 5 x 5 latent pixels (40 x 40 px): the decoder spreads a latent pixel over
    about that much.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        channels = config.vae.latent_channels
        hidden = config.readout.hidden_channels
        self.latent_channels = channels
        self.net = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(hidden, hidden, 1),
            nn.GELU(),
            nn.Conv2d(hidden, 1, 1),
        )

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """Block-mean rain rate [mm h-1 / intensity_scale_mm_h] of each latent pixel.

        Parameters
        ----------
        latents (`(N, C, h, w)` float32): unscaled latents, as the decoder takes them.

        Returns
        -------
        `(N, h, w)` float32, >= 0.
        """
        if latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            raise ValueError(
                f"expected latents (N, {self.latent_channels}, h, w), got {tuple(latents.shape)}"
            )
        return F.softplus(self.net(latents))[:, 0]
