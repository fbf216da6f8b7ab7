"""PatchGAN discriminator for the VAE's adversarial loss (training only, never exported).

Layout (pix2pix / taming-transformers "NLayerDiscriminator"), with `n = cfg.disc_layers` and
`ndf = cfg.disc_channels`:

    conv4x4/2 (in -> ndf) + LeakyReLU(0.2)
    (n - 1) x [conv4x4/2 + BatchNorm + LeakyReLU(0.2)]   channels ndf * min(2**i, 8)
    conv4x4/1 + BatchNorm + LeakyReLU(0.2)               channels ndf * min(2**n, 8)
    conv4x4/1 -> 1 channel of logits

so `n` counts every stride-2 conv (the first, unnormalised one included): n = 3 gives the
reference's 2.76 M parameters at ndf = 64 and one input channel. Each logit scores one patch;
for a 256 x 256 input and n = 3 the logits are 30 x 30.
"""

from __future__ import annotations

import torch
from torch import nn

from models.config import VAEConfig

MAX_CHANNEL_MULTIPLIER = 8
LEAKY_SLOPE = 0.2


class PatchDiscriminator(nn.Module):
    """Frames `(N, in_channels, H, W)` -> patch logits `(N, 1, h', w')` (real > 0 > fake)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        if cfg.disc_layers < 1:
            raise ValueError(f"disc_layers must be >= 1, got {cfg.disc_layers}")
        ndf = cfg.disc_channels
        layers: list[nn.Module] = [
            nn.Conv2d(cfg.in_channels, ndf, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(LEAKY_SLOPE),
        ]
        previous = ndf
        for index in range(1, cfg.disc_layers + 1):
            width = ndf * min(2**index, MAX_CHANNEL_MULTIPLIER)
            # the last block keeps the resolution (stride 1) and only widens the receptive field
            stride = 2 if index < cfg.disc_layers else 1
            layers += [
                # no bias: the BatchNorm that follows has its own shift
                nn.Conv2d(previous, width, kernel_size=4, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.LeakyReLU(LEAKY_SLOPE),
            ]
            previous = width
        layers.append(nn.Conv2d(previous, 1, kernel_size=4, stride=1, padding=1))
        self.layers = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (`(N, 1, H, W)` float): normalised rain rate -> logits `(N, 1, h', w')`."""
        return self.layers(frames)


def _init_weights(module: nn.Module) -> None:
    # DCGAN-style init (N(0, 0.02) convs, N(1, 0.02) norm scales) that PatchGAN training expects
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
