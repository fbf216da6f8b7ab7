"""Frame-wise KL autoencoder: single radar frames <-> latents at 1/8 of the resolution.

The VAE sees one frame at a time; sequences `(B, T, 1, H, W)` are folded into the batch axis
(`encode_frames`, `decode_latents`). Layout of the encoder (decoder mirrored):

    conv_in -> per level: resnet x layers_per_block (+ stride-2 conv except at the last level)
    -> mid block (resnet, self-attention, resnet) -> GroupNorm, SiLU, conv_out -> 1x1 quant conv

Everything is written so that `torch.onnx.export` keeps N, H and W dynamic: no Python branch on
tensor sizes, attention as plain matmul + softmax, reshapes taken from the input tensor.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from models.config import VAEConfig

LOGVAR_MIN = -30.0
LOGVAR_MAX = 20.0
NORM_EPS = 1e-6
# frames per encoder/decoder call on CPU when the caller does not choose: the full-resolution
# activations of one frame stay in cache (measured on the small decoder: 1 frame per call
# ~1.6x faster than 2, ~3x faster than 24)
CPU_CHUNK_FRAMES = 1


class DiagonalGaussian:
    """Posterior q(z | x) = N(mean, diag(exp(logvar))) of a batch of frames.

    Parameters
    ----------
    moments (`(N, 2C, h, w)` float): mean (first C channels) and log-variance (last C channels);
        the log-variance is clamped to [-30, 20] so that `exp` stays finite.
    """

    def __init__(self, moments: torch.Tensor) -> None:
        self.mean, logvar = torch.chunk(moments, 2, dim=1)
        self.logvar = torch.clamp(logvar, LOGVAR_MIN, LOGVAR_MAX)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A draw z = mean + std * eps, `(N, C, h, w)`; eps from `generator` (None = default)."""
        eps = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        """The posterior mode (= mean), `(N, C, h, w)`."""
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) per frame, `(N,)` [nats], summed over C, h, w."""
        return 0.5 * torch.sum(self.mean**2 + self.var - 1.0 - self.logvar, dim=(1, 2, 3))


def _group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=NORM_EPS, affine=True)


class ResnetBlock(nn.Module):
    """GroupNorm -> SiLU -> conv3x3, twice, plus a (1x1-projected if needed) skip."""

    def __init__(self, in_channels: int, out_channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = _group_norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = _group_norm(out_channels, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.skip = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1)
            if in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class SpatialSelfAttention(nn.Module):
    """Single-head self-attention over all h*w positions of a feature map (pre-GroupNorm)."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = _group_norm(channels, groups)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.Linear(channels, channels)
        self.scale = channels**-0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, C, h, w) -> (N, h*w, C); the reshape back takes its shape from `x` so that
        # h and w stay symbolic in an ONNX export
        tokens = self.norm(x).flatten(2).transpose(1, 2)
        q = self.to_q(tokens)
        k = self.to_k(tokens)
        v = self.to_v(tokens)
        weights = torch.softmax(torch.matmul(q, k.transpose(1, 2)) * self.scale, dim=-1)
        out = self.to_out(torch.matmul(weights, v))
        return x + out.transpose(1, 2).reshape(x.shape)


class MidBlock(nn.Module):
    """Resnet -> self-attention (optional) -> resnet at the lowest resolution."""

    def __init__(self, channels: int, groups: int, attention: bool) -> None:
        super().__init__()
        self.resnet1 = ResnetBlock(channels, channels, groups)
        self.attention = SpatialSelfAttention(channels, groups) if attention else nn.Identity()
        self.resnet2 = ResnetBlock(channels, channels, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resnet2(self.attention(self.resnet1(x)))


class Downsample(nn.Module):
    """Stride-2 conv3x3: (N, C, H, W) -> (N, C, H/2, W/2) for even H, W."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then conv3x3: (N, C, h, w) -> (N, C, 2h, 2w)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class FrameEncoder(nn.Module):
    """Frames `(N, in_channels, H, W)` -> posterior moments `(N, 2C, H/8, W/8)`.

    H and W must be multiples of 8 (`2 ** (len(block_channels) - 1)`).
    """

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        channels = cfg.block_channels
        groups = cfg.norm_groups
        self.conv_in = nn.Conv2d(cfg.in_channels, channels[0], kernel_size=3, padding=1)
        levels: list[nn.Module] = []
        previous = channels[0]
        for index, width in enumerate(channels):
            layers: list[nn.Module] = []
            for _ in range(cfg.encoder_layers_per_block):
                layers.append(ResnetBlock(previous, width, groups))
                previous = width
            if index < len(channels) - 1:
                layers.append(Downsample(width))
            levels.append(nn.Sequential(*layers))
        self.levels = nn.ModuleList(levels)
        self.mid = MidBlock(channels[-1], groups, cfg.mid_attention)
        self.norm_out = _group_norm(channels[-1], groups)
        self.conv_out = nn.Conv2d(channels[-1], 2 * cfg.latent_channels, kernel_size=3, padding=1)
        self.quant_conv = nn.Conv2d(2 * cfg.latent_channels, 2 * cfg.latent_channels, 1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (`(N, 1, H, W)` float): normalised rain rate -> moments `(N, 2C, H/8, W/8)`."""
        h = self.conv_in(frames)
        for level in self.levels:
            h = level(h)
        h = self.mid(h)
        h = self.conv_out(F.silu(self.norm_out(h)))
        return self.quant_conv(h)


class FrameDecoder(nn.Module):
    """Latents `(N, C, h, w)` -> frames `(N, in_channels, 8h, 8w)`, linear output."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        channels = tuple(reversed(cfg.block_channels))
        groups = cfg.norm_groups
        self.post_quant_conv = nn.Conv2d(cfg.latent_channels, cfg.latent_channels, 1)
        self.conv_in = nn.Conv2d(cfg.latent_channels, channels[0], kernel_size=3, padding=1)
        self.mid = MidBlock(channels[0], groups, cfg.mid_attention)
        levels: list[nn.Module] = []
        previous = channels[0]
        for index, width in enumerate(channels):
            layers: list[nn.Module] = []
            for _ in range(cfg.decoder_layers_per_block):
                layers.append(ResnetBlock(previous, width, groups))
                previous = width
            if index < len(channels) - 1:
                layers.append(Upsample(width))
            levels.append(nn.Sequential(*layers))
        self.levels = nn.ModuleList(levels)
        self.norm_out = _group_norm(channels[-1], groups)
        self.conv_out = nn.Conv2d(channels[-1], cfg.in_channels, kernel_size=3, padding=1)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (`(N, C, h, w)` float) -> frames `(N, 1, 8h, 8w)` (normalised rain rate)."""
        h = self.conv_in(self.post_quant_conv(latents))
        h = self.mid(h)
        for level in self.levels:
            h = level(h)
        # linear output: no activation, the loss sees the raw values
        return self.conv_out(F.silu(self.norm_out(h)))


class FrameVAE(nn.Module):
    """KL autoencoder applied to each frame independently (PreDiff's frame-wise VAE)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        if len(cfg.block_channels) != 4:
            raise ValueError(
                f"block_channels must have 4 levels (x8 downsampling), got {cfg.block_channels}"
            )
        self.cfg = cfg
        self.encoder = FrameEncoder(cfg)
        self.decoder = FrameDecoder(cfg)

    @property
    def last_layer_weight(self) -> torch.Tensor:
        """Weight of the decoder's output conv (for the adaptive GAN weight)."""
        return self.decoder.conv_out.weight

    def encode(self, frames: torch.Tensor) -> DiagonalGaussian:
        """frames (`(N, 1, H, W)` float) -> posterior over latents `(N, C, H/8, W/8)`."""
        return DiagonalGaussian(self.encoder(frames))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (`(N, C, h, w)` float) -> frames `(N, 1, 8h, 8w)`."""
        return self.decoder(latents)

    def forward(
        self,
        frames: torch.Tensor,
        sample_posterior: bool = True,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, DiagonalGaussian]:
        """Reconstruct frames `(N, 1, H, W)`; returns (reconstruction `(N, 1, H, W)`, posterior).

        With `sample_posterior` the decoder sees a draw from the posterior (training), else
        its mode.
        """
        posterior = self.encode(frames)
        latents = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(latents), posterior


def encode_frames(
    vae: FrameVAE, frames: torch.Tensor, chunk_size: int | None = None
) -> torch.Tensor:
    """Encode a sequence frame by frame to the posterior mode.

    Parameters
    ----------
    frames (`(B, T, 1, H, W)` float): normalised rain rate.
    chunk_size: frames per encoder call; None = `CPU_CHUNK_FRAMES` on CPU, all at once elsewhere.

    Returns
    -------
    latents `(B, T, C, H/8, W/8)`.
    """
    batch, steps = frames.shape[:2]
    flat = frames.reshape(batch * steps, *frames.shape[2:])
    latents = _map_chunks(lambda x: vae.encode(x).mode(), flat, chunk_size)
    return latents.reshape(batch, steps, *latents.shape[1:])


def decode_latents(
    vae: FrameVAE, latents: torch.Tensor, chunk_size: int | None = None
) -> torch.Tensor:
    """Decode a latent sequence frame by frame.

    Parameters
    ----------
    latents (`(B, T, C, h, w)` float).
    chunk_size: frames per decoder call; None = `CPU_CHUNK_FRAMES` on CPU, all at once elsewhere.

    Returns
    -------
    frames `(B, T, 1, 8h, 8w)`: normalised rain rate.
    """
    batch, steps = latents.shape[:2]
    flat = latents.reshape(batch * steps, *latents.shape[2:])
    frames = _map_chunks(vae.decode, flat, chunk_size)
    return frames.reshape(batch, steps, *frames.shape[1:])


def _map_chunks(
    fn: Callable[[torch.Tensor], torch.Tensor], flat: torch.Tensor, chunk_size: int | None
) -> torch.Tensor:
    """`fn` over `flat` (`(N, ...)`) in chunks of frames, concatenated along N."""
    if chunk_size is None:
        chunk_size = CPU_CHUNK_FRAMES if flat.device.type == "cpu" else flat.shape[0]
    if chunk_size >= flat.shape[0]:
        return fn(flat)
    return torch.cat([fn(part) for part in torch.split(flat, chunk_size)], dim=0)
