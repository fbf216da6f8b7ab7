"""Earthformer-UNet: the PreDiff denoiser over latent sequences.

The network sees the encoded context and the noisy future latents concatenated along time, plus
one channel that marks context (1) and future (0) frames, and predicts the noise ε of the future
frames. Structure (following Gao et al. 2023, without encoder-decoder cross-attention):

- patch embedding (`patch_size` x `patch_size`, stride = patch) to `base_units` channels,
- learned position embeddings, separate additive tables for T, H and W,
- sinusoidal timestep embedding + MLP (`4 * base_units` channels),
- per level: one time-conditioned residual block, shared by that level's `depth[i]` steps, each
  step being residual block -> axial cuboid-attention block,
- 2x2 patch merge between levels on the way down; nearest upsample + conv on the way up; additive
  skips,
- a head that un-patchifies the future frames to the latent channels.

Public tensors are channels-first per frame, `(B, T, C, h, w)`; inside, tokens are channels-last,
`(B, T, h', w', C')`. The building blocks here are reused by `models.alignment`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.config import ModelConfig
from models.cuboid_attention import CuboidAttentionBlock

TIME_EMBED_MULT = 4  # width of the timestep-embedding MLP relative to base_units


def timestep_embedding(
    timestep: torch.Tensor, dim: int, max_period: float = 10000.0
) -> torch.Tensor:
    """Sinusoidal embedding of diffusion steps.

    Parameters
    ----------
    timestep (`(B,)` int or float): diffusion step index.
    dim : int
        Embedding width (even).

    Returns
    -------
    `(B, dim)` float32: `[cos(t f_k), sin(t f_k)]` with frequencies `f_k` from 1 to `1/max_period`.
    """
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float32, device=timestep.device) / half
    frequencies = torch.exp(-math.log(max_period) * exponent)
    angles = timestep.to(torch.float32)[:, None] * frequencies[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class TimestepMLP(nn.Module):
    """Sinusoidal embedding of width `dim` -> Linear -> SiLU -> Linear, `(B,)` -> `(B, 4 dim)`."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.out_channels = dim * TIME_EMBED_MULT
        self.net = nn.Sequential(
            nn.Linear(dim, self.out_channels),
            nn.SiLU(),
            nn.Linear(self.out_channels, self.out_channels),
        )

    def forward(self, timestep: torch.Tensor) -> torch.Tensor:
        return self.net(timestep_embedding(timestep, self.dim))


class TimeEmbedResBlock(nn.Module):
    """Time-conditioned residual block on channels-last tokens `(B, T, H, W, C)`.

    `h = conv(SiLU(GN(x))) + Linear(SiLU(emb))`, `x + conv(SiLU(GN(h)))`. The convolutions are
    3-D with kernel `(kernel_t, 3, 3)`; `kernel_t = 1` makes them per-frame 2-D convolutions
    (a third of the cost).
    The last convolution starts at zero so that the block starts as the identity.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        norm_groups: int,
        kernel_t: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if channels % norm_groups:
            raise ValueError(f"channels {channels} are not divisible by norm_groups {norm_groups}")
        kernel = (kernel_t, 3, 3)
        padding = (kernel_t // 2, 1, 1)
        self.norm_in = nn.GroupNorm(norm_groups, channels)
        self.conv_in = nn.Conv3d(channels, channels, kernel, padding=padding)
        self.emb_proj = nn.Linear(emb_channels, channels)
        self.norm_out = nn.GroupNorm(norm_groups, channels)
        self.dropout = nn.Dropout(dropout)
        self.conv_out = nn.Conv3d(channels, channels, kernel, padding=padding)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x (`(B, T, H, W, C)`), emb (`(B, E)`) -> `(B, T, H, W, C)`."""
        # channels-first view for GroupNorm / Conv3d; a permute, so no copy for channels-last data
        h = x.permute(0, 4, 1, 2, 3)
        h = self.conv_in(F.silu(self.norm_in(h)))
        h = h + self.emb_proj(F.silu(emb))[:, :, None, None, None]
        h = self.conv_out(self.dropout(F.silu(self.norm_out(h))))
        return x + h.permute(0, 2, 3, 4, 1)


class PatchEmbed(nn.Module):
    """`(B, T, C, h, w)` -> channels-last tokens `(B, T, h/p, w/p, dim)` (per-frame, stride p)."""

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames = x.shape[:2]
        tokens = self.proj(x.flatten(0, 1))
        return tokens.unflatten(0, (batch, frames)).permute(0, 1, 3, 4, 2)


class PatchUnembed(nn.Module):
    """Channels-last tokens `(B, T, h', w', dim)` -> `(B, T, C, h' p, w' p)`: LayerNorm + linear."""

    def __init__(self, dim: int, out_channels: int, patch_size: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.patch_size = patch_size
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, out_channels * patch_size * patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames, height, width, _ = x.shape
        p = self.patch_size
        x = self.proj(self.norm(x)).reshape(batch, frames, height, width, self.out_channels, p, p)
        x = x.permute(0, 1, 4, 2, 5, 3, 6)
        return x.reshape(batch, frames, self.out_channels, height * p, width * p)


class PositionEmbedding(nn.Module):
    """Learned additive position embeddings, one table per axis (T, H, W).

    The H and W tables cover the largest grid; a smaller grid uses the rows starting at
    `offset = (row, col)` (token units), so training on random crops trains every row.
    """

    def __init__(self, dim: int, max_frames: int, max_height: int, max_width: int) -> None:
        super().__init__()
        self.time = nn.Parameter(torch.randn(max_frames, dim) * 0.02)
        self.height = nn.Parameter(torch.randn(max_height, dim) * 0.02)
        self.width = nn.Parameter(torch.randn(max_width, dim) * 0.02)

    def forward(self, x: torch.Tensor, offset: tuple[int, int] = (0, 0)) -> torch.Tensor:
        """x (`(B, T, H, W, C)`) -> x + embeddings."""
        frames, height, width = x.shape[1:4]
        row, col = offset
        if row < 0 or col < 0:
            raise ValueError(f"pos_offset {offset} must be non-negative")
        if row + height > self.height.shape[0] or col + width > self.width.shape[0]:
            raise ValueError(
                f"tokens {height}x{width} at offset {offset} exceed the position tables "
                f"({self.height.shape[0]}x{self.width.shape[0]}); the grid is too large"
            )
        if frames > self.time.shape[0]:
            raise ValueError(f"{frames} frames exceed the time table ({self.time.shape[0]})")
        return (
            x
            + self.time[:frames, None, None, :]
            + self.height[row : row + height, None, :]
            + self.width[col : col + width]
        )


class PatchMerge(nn.Module):
    """2x2 spatial merge: `(B, T, H, W, C)` -> `(B, T, H/2, W/2, out_dim)` (LayerNorm + linear)."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames, height, width, channels = x.shape
        x = x.reshape(batch, frames, height // 2, 2, width // 2, 2, channels)
        x = x.permute(0, 1, 2, 4, 3, 5, 6).reshape(batch, frames, height // 2, width // 2, -1)
        return self.reduction(self.norm(x))


class Upsample(nn.Module):
    """`(B, T, H, W, C)` -> `(B, T, 2H, 2W, out_dim)`: nearest x2 per frame, then a 3x3 conv."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, out_dim, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames = x.shape[:2]
        frames_first = x.flatten(0, 1).permute(0, 3, 1, 2)
        up = self.conv(F.interpolate(frames_first, scale_factor=2.0, mode="nearest"))
        return up.permute(0, 2, 3, 1).unflatten(0, (batch, frames))


def context_marker(context: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
    """Concatenate context and sample along time, plus a channel: 1 on context, 0 on future frames.

    context (`(B, T_in, C, h, w)`), sample (`(B, T_out, C, h, w)`)
    -> `(B, T_in + T_out, C + 1, h, w)`.
    """
    batch, frames_in, _, height, width = context.shape
    frames_out = sample.shape[1]
    marker = torch.cat(
        [
            context.new_ones((batch, frames_in, 1, height, width)),
            sample.new_zeros((batch, frames_out, 1, height, width)),
        ],
        dim=1,
    )
    return torch.cat([torch.cat([context, sample], dim=1), marker], dim=2)


def with_extrapolation(
    context: torch.Tensor, sample: torch.Tensor, extrapolation: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs of a motion-aware network: the extrapolation latents as extra channels of the
    future frames, zeros in their place on the context frames.

    context (`(B, T_in, C, h, w)`), sample and extrapolation (`(B, T_out, C, h, w)`)
    -> context `(B, T_in, 2C, h, w)`, sample `(B, T_out, 2C, h, w)`.
    """
    if extrapolation is None or extrapolation.shape != sample.shape:
        raise ValueError(
            "a motion-aware network needs the extrapolation latents, shaped as the sample"
        )
    return (
        torch.cat([context, torch.zeros_like(context)], dim=2),
        torch.cat([sample, extrapolation.to(sample.dtype)], dim=2),
    )


def check_latent_grid(height: int, width: int, factor: int, who: str) -> None:
    """Raise ValueError unless both latent sides are positive multiples of `factor`."""
    if height % factor or width % factor or height <= 0 or width <= 0:
        raise ValueError(
            f"{who}: latent grid {height}x{width} is not a multiple of {factor} "
            f"(patch size x 2^(levels - 1))"
        )


class EarthformerUNet(nn.Module):
    """Denoiser ε(z_t, t, z_context) of the latent diffusion model.

    Parameters
    ----------
    config : ModelConfig
        Uses `config.denoiser`, `config.vae.latent_channels`, `frames_in`, `frames_out` and
        `max_latent_px` (sizes the H/W position tables).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        cfg = config.denoiser
        units = tuple(cfg.block_units)
        if units[0] != cfg.base_units:
            raise ValueError(f"block_units[0] {units[0]} must equal base_units {cfg.base_units}")
        if len(cfg.depth) != len(units):
            raise ValueError(f"depth {cfg.depth} and block_units {units} differ in length")
        self.latent_channels = config.vae.latent_channels
        self.frames_in = config.frames_in
        self.frames_out = config.frames_out
        self.patch_size = cfg.patch_size
        self.num_levels = len(units)
        self.depth = tuple(cfg.depth)
        frames = config.frames_in + config.frames_out
        max_tokens = config.max_latent_px // cfg.patch_size
        self.max_tokens = max_tokens

        # input channels per frame: latent, [extrapolation latent,] context marker
        self.extrapolation = config.diffusion.extrapolation
        in_channels = self.latent_channels * (2 if self.extrapolation else 1) + 1
        self.patch_embed = PatchEmbed(in_channels, cfg.base_units, cfg.patch_size)
        self.pos_embed = PositionEmbedding(cfg.base_units, frames, max_tokens, max_tokens)
        self.time_embed = TimestepMLP(cfg.base_units)
        emb_channels = self.time_embed.out_channels

        def res_block(level: int) -> TimeEmbedResBlock:
            return TimeEmbedResBlock(
                units[level], emb_channels, cfg.norm_groups, cfg.conv_kernel_t, cfg.dropout
            )

        def attention_stack(level: int) -> nn.ModuleList:
            side = max(max_tokens // 2**level, 1)
            return nn.ModuleList(
                CuboidAttentionBlock(
                    units[level], cfg.num_heads, (frames, side, side), cfg.ffn_ratio, cfg.dropout
                )
                for _ in range(cfg.depth[level])
            )

        levels = range(self.num_levels)
        self.down_res = nn.ModuleList(res_block(i) for i in levels)
        self.down_attention = nn.ModuleList(attention_stack(i) for i in levels)
        self.merges = nn.ModuleList(PatchMerge(units[i], units[i + 1]) for i in levels[:-1])
        self.up_res = nn.ModuleList(res_block(i) for i in levels)
        self.up_attention = nn.ModuleList(attention_stack(i) for i in levels)
        self.upsamples = nn.ModuleList(Upsample(units[i + 1], units[i]) for i in levels[:-1])
        self.head = PatchUnembed(cfg.base_units, self.latent_channels, cfg.patch_size)

    @property
    def grid_factor(self) -> int:
        """Latent sides must be multiples of this."""
        return self.patch_size * 2 ** (self.num_levels - 1)

    def max_pos_offset(self, height: int, width: int) -> tuple[int, int]:
        """Largest valid `pos_offset` (token units) for a latent grid of `height` x `width`."""
        p = self.patch_size
        return (self.max_tokens - height // p, self.max_tokens - width // p)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        pos_offset: tuple[int, int] = (0, 0),
        extrapolation: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the noise of the future latents.

        Parameters
        ----------
        sample (`(B, T_out, C, h, w)` float32): noisy future latents z_t.
        timestep (`(B,)` int64 or float): diffusion step of each batch member.
        context (`(B, T_in, C, h, w)` float32): encoded past frames (clean).
        pos_offset : (int, int)
            Offset (rows, cols) in tokens (latent pixels / patch_size) of this grid inside the
            position tables; (0, 0) at inference, random crops' offsets in training. At most
            `max_pos_offset(h, w)`.
        extrapolation (`(B, T_out, C, h, w)` float32): scaled latents of the extrapolation
            nowcast; required by a motion-aware model (`diffusion.extrapolation`), given to the
            future frames as extra channels (zeros on the context frames).

        Returns
        -------
        `(B, T_out, C, h, w)` float32: predicted ε.
        """
        batch, frames_out, channels, height, width = sample.shape
        if frames_out != self.frames_out or context.shape[1] != self.frames_in:
            raise ValueError(
                f"expected {self.frames_in} context and {self.frames_out} future frames, got "
                f"{context.shape[1]} and {frames_out}"
            )
        if channels != self.latent_channels or context.shape[2] != channels:
            raise ValueError(f"expected {self.latent_channels} latent channels, got {channels}")
        check_latent_grid(height, width, self.grid_factor, "EarthformerUNet")
        if timestep.dim() == 0:
            timestep = timestep.expand(batch)

        if self.extrapolation:
            context, sample = with_extrapolation(context, sample, extrapolation)
        x = self.patch_embed(context_marker(context, sample))
        x = self.pos_embed(x, pos_offset)
        emb = self.time_embed(timestep)

        skips = []
        for level in range(self.num_levels):
            if level > 0:
                x = self.merges[level - 1](x)
            for block in self.down_attention[level]:
                x = block(self.down_res[level](x, emb))
            if level < self.num_levels - 1:
                skips.append(x)
        for level in reversed(range(self.num_levels)):
            if level < self.num_levels - 1:
                x = x + skips[level]
            for block in self.up_attention[level]:
                x = block(self.up_res[level](x, emb))
            if level > 0:
                x = self.upsamples[level - 1](x)
        return self.head(x[:, self.frames_in :])
