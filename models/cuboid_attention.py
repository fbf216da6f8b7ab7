"""Cuboid self-attention (Earthformer, Gao et al. 2022) in the axial pattern.

A cuboid-attention block splits a token grid `(T, H, W)` into cuboids and runs multi-head
self-attention inside each cuboid. The axial pattern uses three cuboid shapes in turn:
`(T, 1, 1)`, `(1, H, 1)`, `(1, 1, W)`, i.e. attention along one whole axis at a time. Because every
cuboid spans a whole axis, no padding or masking is needed: the module is reshapes, permutes,
matrix products and a learned relative position bias, which keeps it fast and ONNX-exportable
(no boolean masks, no in-place slice writes).

All tensors here are channels-last: `(B, T, H, W, C)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

AXES = ("t", "h", "w")

# The block keeps its residual stream laid out with the attended axis next to the channels, so
# every sub-block works on contiguous `(..., L, C)` lines; one permute (copy) per sub-block moves
# the stream to the next axis' layout. Layouts, as positions of (B, T, H, W, C):
#   "t" lines: (B, H, W, T, C)   "h" lines: (B, T, W, H, C)   "w" lines: (B, T, H, W, C)
_TO_T_LINES = (0, 2, 3, 1, 4)  # from (B, T, H, W, C)
_T_TO_H_LINES = (0, 3, 2, 1, 4)  # (B, H, W, T, C) -> (B, T, W, H, C)
_H_TO_W_LINES = (0, 1, 3, 2, 4)  # (B, T, W, H, C) -> (B, T, H, W, C)


class LineSelfAttention(nn.Module):
    """Multi-head self-attention within lines of tokens `(..., L, C)` (one cuboid per line).

    Attention logits get a learned relative position bias: a table of `(2 * max_len - 1,
    num_heads)` indexed by the offset `i - j` between query and key positions.

    Parameters
    ----------
    dim : int
        Channels `C` of the tokens.
    num_heads : int
        Attention heads; `dim` must be divisible by it.
    max_len : int
        Longest line the bias table supports.
    dropout : float
        Dropout on the output projection.
    """

    def __init__(self, dim: int, num_heads: int, max_len: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.max_len = max_len
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)
        self.relative_bias = nn.Parameter(torch.zeros(2 * max_len - 1, num_heads))
        nn.init.trunc_normal_(self.relative_bias, std=0.02)

    def relative_position_bias(self, length: int) -> torch.Tensor:
        """Bias `(num_heads, length, length)` added to the attention logits."""
        if length > self.max_len:
            raise ValueError(
                f"an attended axis has {length} positions; this layer supports at most "
                f"{self.max_len}"
            )
        positions = torch.arange(length, device=self.relative_bias.device)
        offsets = positions[:, None] - positions[None, :] + (self.max_len - 1)
        return self.relative_bias[offsets].permute(2, 0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (`(..., L, C)`) -> same shape: attention among the L tokens of each line."""
        length, channels = x.shape[-2:]
        qkv = self.qkv(x).reshape(-1, length, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (N, heads, L, d)
        # a 4-D float bias (not 3-D) lets PyTorch pick its fused CPU kernel at inference
        bias = self.relative_position_bias(length).to(query.dtype)[None]
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias)
        # an explicit copy to (N, L, heads, d): the attention output's memory layout differs
        # between PyTorch's fused kernel and the decomposition used for ONNX export, so a
        # reshape that is a free view in one is invalid in the other
        out = out.transpose(1, 2).clone(memory_format=torch.contiguous_format)
        return self.proj_drop(self.proj(out.reshape(x.shape)))


class FeedForward(nn.Module):
    """Pre-LayerNorm GELU MLP with ratio `ffn_ratio`, applied per token (channels-last)."""

    def __init__(self, dim: int, ffn_ratio: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.net = nn.Sequential(
            nn.Linear(dim, dim * ffn_ratio),
            nn.GELU(),
            nn.Linear(dim * ffn_ratio, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(x))


class CuboidAttentionBlock(nn.Module):
    """One axial cuboid-attention block: for the cuboids (T,1,1), (1,H,1), (1,1,W) in turn,
    `x = x + Attn(LN(x))` then `x = x + FFN(LN(x))`.

    Parameters
    ----------
    dim : int
        Token channels `C`.
    num_heads : int
        Attention heads.
    max_shape : tuple of int
        `(T, H, W)`: the longest axes the relative position tables support.
    ffn_ratio : int
        Hidden width of each FFN relative to `dim`.
    dropout : float
        Dropout after the attention projection and the FFN.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        max_shape: tuple[int, int, int],
        ffn_ratio: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.attn_norms = nn.ModuleList(nn.LayerNorm(dim) for _ in AXES)
        self.attentions = nn.ModuleList(
            LineSelfAttention(dim, num_heads, max_len, dropout) for max_len in max_shape
        )
        self.ffns = nn.ModuleList(FeedForward(dim, ffn_ratio, dropout) for _ in AXES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (`(B, T, H, W, C)`) -> same shape."""
        permutes = (_TO_T_LINES, _T_TO_H_LINES, _H_TO_W_LINES)
        for order, norm, attention, ffn in zip(
            permutes, self.attn_norms, self.attentions, self.ffns, strict=True
        ):
            x = x.permute(order).contiguous()
            x = x + attention(norm(x))
            x = x + ffn(x)
        return x
