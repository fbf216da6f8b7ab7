"""Knowledge-alignment network A(z_t, t, z_context) of PreDiff.

A light encoder-only Earthformer that predicts, per future frame, the mean rain rate of the clean
future (in mm h-1 / `config.intensity_scale_mm_h`) from the noisy future latents. The sampler
uses its gradient to steer generation toward a requested intensity.

Same building blocks as the denoiser (`models.earthformer_unet`): patch embedding, T+H+W position
embeddings, timestep MLP, per level one time-conditioned residual block shared by that level's
axial cuboid-attention steps, 2x2 patch merges; then mean pooling over h, w and a linear head
applied to each future frame. Unlike the reference (which sees the noisy future only), with
`use_context` the encoded past is concatenated along time with a context-marker channel, as in
the denoiser. For a motion-aware model (`diffusion.extrapolation`) it sees what the denoiser
sees: the diffused quantity (the scaled residual from the extrapolation latents, `models.residual`)
and the extrapolation latents as extra channels, so the guidance gradient is taken directly with
respect to the sampler's state.
"""

from __future__ import annotations

import torch
from torch import nn

from models.config import ModelConfig
from models.cuboid_attention import CuboidAttentionBlock
from models.earthformer_unet import (
    PatchEmbed,
    PatchMerge,
    PositionEmbedding,
    TimeEmbedResBlock,
    TimestepMLP,
    check_latent_grid,
    context_marker,
    with_extrapolation,
)


class AlignmentNet(nn.Module):
    """Predicts the per-frame mean rain rate of the clean future from noisy latents.

    Parameters
    ----------
    config : ModelConfig
        Uses `config.alignment`, `config.vae.latent_channels`, `frames_in`, `frames_out` and
        `max_latent_px`. Level `i` has `base_units * 2**i` channels.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        cfg = config.alignment
        self.use_context = cfg.use_context
        self.latent_channels = config.vae.latent_channels
        self.frames_in = config.frames_in
        self.frames_out = config.frames_out
        self.patch_size = cfg.patch_size
        self.num_levels = len(cfg.depth)
        units = [cfg.base_units * 2**i for i in range(self.num_levels)]
        frames = config.frames_out + (config.frames_in if cfg.use_context else 0)
        self.extrapolation = config.diffusion.extrapolation
        in_channels = self.latent_channels * (2 if self.extrapolation else 1)
        in_channels += 1 if cfg.use_context else 0
        max_tokens = config.max_latent_px // cfg.patch_size

        self.patch_embed = PatchEmbed(in_channels, cfg.base_units, cfg.patch_size)
        self.pos_embed = PositionEmbedding(cfg.base_units, frames, max_tokens, max_tokens)
        self.time_embed = TimestepMLP(cfg.base_units)
        self.res_blocks = nn.ModuleList(
            TimeEmbedResBlock(
                units[i], self.time_embed.out_channels, cfg.norm_groups, cfg.conv_kernel_t
            )
            for i in range(self.num_levels)
        )
        self.attention = nn.ModuleList(
            nn.ModuleList(
                CuboidAttentionBlock(
                    units[i],
                    cfg.num_heads,
                    (frames, max(max_tokens // 2**i, 1), max(max_tokens // 2**i, 1)),
                    cfg.ffn_ratio,
                )
                for _ in range(cfg.depth[i])
            )
            for i in range(self.num_levels)
        )
        self.merges = nn.ModuleList(
            PatchMerge(units[i], units[i + 1]) for i in range(self.num_levels - 1)
        )
        self.head_norm = nn.LayerNorm(units[-1])
        self.head = nn.Linear(units[-1], 1)

    @property
    def grid_factor(self) -> int:
        """Latent sides must be multiples of this."""
        return self.patch_size * 2 ** (self.num_levels - 1)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        extrapolation: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the clean future's mean rain rate per frame.

        Parameters
        ----------
        sample (`(B, T_out, C, h, w)` float32): noisy future latents z_t.
        timestep (`(B,)` int64 or float): diffusion step of each batch member.
        context (`(B, T_in, C, h, w)` float32): encoded past frames; ignored unless `use_context`.
        extrapolation (`(B, T_out, C, h, w)` float32): scaled extrapolation latents; required by
            a motion-aware model, whose `sample` is the diffused residual.

        Returns
        -------
        `(B, T_out)` float32: mean rain rate [mm h-1] / `intensity_scale_mm_h` of each future frame.
        """
        batch, frames_out, channels, height, width = sample.shape
        if frames_out != self.frames_out or channels != self.latent_channels:
            raise ValueError(
                f"expected sample (B, {self.frames_out}, {self.latent_channels}, h, w), "
                f"got {tuple(sample.shape)}"
            )
        context_shape = (batch, self.frames_in, channels, height, width)
        if self.use_context and tuple(context.shape) != context_shape:
            raise ValueError(
                f"expected context (B, {self.frames_in}, C, h, w) matching the sample, "
                f"got {tuple(context.shape)}"
            )
        check_latent_grid(height, width, self.grid_factor, "AlignmentNet")
        if timestep.dim() == 0:
            timestep = timestep.expand(batch)

        if self.extrapolation:
            context, sample = with_extrapolation(context, sample, extrapolation)
        x = context_marker(context, sample) if self.use_context else sample
        x = self.pos_embed(self.patch_embed(x))
        emb = self.time_embed(timestep)
        for level in range(self.num_levels):
            if level > 0:
                x = self.merges[level - 1](x)
            for block in self.attention[level]:
                x = block(self.res_blocks[level](x, emb))
        pooled = x[:, -self.frames_out :].mean(dim=(2, 3))  # (B, T_out, C)
        return self.head(self.head_norm(pooled)).squeeze(-1)
