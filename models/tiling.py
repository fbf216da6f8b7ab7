"""Overlapping tiles of the trained size over a large grid, and their smooth blending.

A model is trained on crops of `ModelConfig.max_grid_px` pixels: its denoiser's position tables
and its VAE's mid-block self-attention have only ever seen that extent. A composite larger than
that runs as overlapping tiles of the trained size, all tiles of a request as one batch, and the
tile outputs are blended back onto the full grid with a smooth, strictly positive weight per
tile (a raised-cosine ramp over the overlap, 1 inside).

Why blend the denoiser's noise prediction at every step (MultiDiffusion, Bar-Tal et al. 2023)
rather than sample each tile on its own and blend the results: the sample then lives on one full
latent grid, every pixel gets one trajectory, and neighbouring tiles agree at every step, so no
seam can build up; the initial noise is drawn once for the full grid from the request's own
generator, which keeps a seed's forecast deterministic. Why not run the whole latent grid at
once: the position tables stop at the trained size (larger grids would read untrained entries).
The VAE is tiled the same way (its attention is quadratic in the grid and trained on 256 px) and
blended in the output's space.

Plain functions over torch tensors whose last two dims are (rows, columns); tiles are stacked
tile-major: rows `k * B : (k + 1) * B` of a split hold tile `k` of the `B` inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TileLayout:
    """Where the tiles lie on a grid.

    height, width: the full grid [cells]; tile_h, tile_w: one tile [cells] (<= the grid);
    starts: (row, column) of each tile's first cell; overlap: the blending ramp [cells].
    """

    height: int
    width: int
    tile_h: int
    tile_w: int
    starts: tuple[tuple[int, int], ...]
    overlap: int

    @property
    def count(self) -> int:
        return len(self.starts)

    def scaled(self, factor: float) -> TileLayout:
        """The same tiles on a grid `factor` times finer (8: latent -> pixel; 1/8: back)."""

        def s(value: int) -> int:
            scaled = value * factor
            if abs(scaled - round(scaled)) > 1e-9:
                raise ValueError(f"{value} cells do not scale by {factor} to whole cells")
            return int(round(scaled))

        return TileLayout(
            s(self.height),
            s(self.width),
            s(self.tile_h),
            s(self.tile_w),
            tuple((s(r), s(c)) for r, c in self.starts),
            max(s(self.overlap), 1),
        )


def _starts(length: int, tile: int, overlap: int, multiple: int) -> list[int]:
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    span = length - tile
    starts = [int(round(i * span / (count - 1) / multiple)) * multiple for i in range(count)]
    starts[-1] = span  # the last tile ends exactly at the edge (span is a multiple)
    return sorted(set(starts))


def tile_layout(height: int, width: int, tile: int, overlap: int, multiple: int = 1) -> TileLayout:
    """Tiles of `tile` cells (or the whole side where it is shorter) covering a grid.

    Neighbouring tiles overlap by at least `overlap - multiple` cells, spread evenly; starts
    are multiples of `multiple` (8 for pixel tiles whose latents must align). `height`, `width`
    and `tile` must be multiples of `multiple`, and 0 <= overlap < tile.
    """
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got {overlap} for tile {tile}")
    for name, value in (("height", height), ("width", width), ("tile", tile)):
        if value <= 0 or value % multiple:
            raise ValueError(f"{name} {value} is not a positive multiple of {multiple}")
    rows = _starts(height, tile, overlap, multiple)
    cols = _starts(width, tile, overlap, multiple)
    return TileLayout(
        height,
        width,
        min(tile, height),
        min(tile, width),
        tuple((r, c) for r in rows for c in cols),
        max(overlap, 1),
    )


def tile_weight(layout: TileLayout, device: torch.device | str = "cpu") -> torch.Tensor:
    """`(tile_h, tile_w)` float32 blending weight of one tile, in (0, 1].

    A raised-cosine ramp from near 0 at the tile's edge to 1 at `overlap` cells inside: the
    blended field changes smoothly from one tile to the next. Strictly positive, so every cell
    covered by any tile has a defined weighted mean.
    """

    def ramp(length: int) -> torch.Tensor:
        index = torch.arange(length, dtype=torch.float64)
        distance = torch.minimum(index, length - 1 - index)  # cells to the nearest edge
        inside = (distance + 1) / (layout.overlap + 1)
        weight = torch.where(
            inside < 1, 0.5 - 0.5 * torch.cos(math.pi * inside), torch.ones_like(inside)
        )
        return weight.float()

    return (ramp(layout.tile_h)[:, None] * ramp(layout.tile_w)[None, :]).to(device)


def split_tiles(x: torch.Tensor, layout: TileLayout) -> torch.Tensor:
    """`(B, ..., H, W)` -> `(K * B, ..., tile_h, tile_w)`, tile-major (K = `layout.count`)."""
    _check_grid(x, layout)
    if layout.count == 1:
        return x
    th, tw = layout.tile_h, layout.tile_w
    return torch.cat([x[..., r : r + th, c : c + tw] for r, c in layout.starts])


def merge_tiles(tiles: torch.Tensor, layout: TileLayout, weight: torch.Tensor) -> torch.Tensor:
    """Weighted mean of tile-major `(K * B, ..., tile_h, tile_w)` tiles -> `(B, ..., H, W)`.

    weight (`(tile_h, tile_w)`, > 0): `tile_weight(layout)`. Where tiles overlap each cell is
    the weight-normalised mean of the tiles covering it; `merge_tiles(split_tiles(x)) == x`.
    """
    if layout.count == 1:
        return tiles
    if tiles.shape[0] % layout.count:
        raise ValueError(f"{tiles.shape[0]} tile rows are not a multiple of {layout.count} tiles")
    batch = tiles.shape[0] // layout.count
    th, tw = layout.tile_h, layout.tile_w
    weight = weight.to(device=tiles.device, dtype=tiles.dtype)
    out = tiles.new_zeros((batch, *tiles.shape[1:-2], layout.height, layout.width))
    norm = tiles.new_zeros((layout.height, layout.width))
    for k, (r, c) in enumerate(layout.starts):
        out[..., r : r + th, c : c + tw] += weight * tiles[k * batch : (k + 1) * batch]
        norm[r : r + th, c : c + tw] += weight
    return out / norm


def _check_grid(x: torch.Tensor, layout: TileLayout) -> None:
    if tuple(x.shape[-2:]) != (layout.height, layout.width):
        raise ValueError(
            f"tensor grid {tuple(x.shape[-2:])} is not the layout's {(layout.height, layout.width)}"
        )
