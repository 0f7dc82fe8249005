"""Glyphs as premultiplied RGBA tensors, and the shipped atlas of 64x64 bases (one PNG, one tile per emoji).

Premultiplied: colour times alpha, so that resizing never bleeds the colour of invisible pixels into an
outline. The atlas is plain (straight-alpha) RGBA PNG, the form every image tool reads.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from limner.builtin.emoji_set import load_glyphs
from limner.builtin.upsampler import downsample

BASE_SIDE = 64
ATLAS_COLUMNS = 48


def premultiplied(images: Sequence[Image.Image]) -> torch.Tensor:
    """RGBA images -> [B, 4, H, W] floats in [0, 1], colour premultiplied by alpha."""
    array = np.stack([np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0 for image in images])
    tensor = torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()
    return torch.cat([tensor[:, :3] * tensor[:, 3:], tensor[:, 3:]], dim=1)


def straight(premultiplied_pixels: torch.Tensor) -> np.ndarray:
    """[B, 4, H, W] premultiplied in [0, 1] -> [B, H, W, 4] straight-alpha uint8."""
    pixels = premultiplied_pixels.float().clamp(0, 1)
    alpha = pixels[:, 3:]
    colour = torch.where(alpha > 1 / 512, pixels[:, :3] / alpha.clamp(min=1e-6), torch.zeros_like(pixels[:, :3]))
    out = torch.cat([colour.clamp(0, 1), alpha], dim=1)
    return (out * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def base_tiles(images: Sequence[Image.Image], side: int = BASE_SIDE) -> torch.Tensor:
    """The shipped bases: ``images`` reduced to ``side`` pixels, [N, side, side, 4] straight-alpha uint8."""
    chunks = [straight(downsample(premultiplied(images[i : i + 64]), side)) for i in range(0, len(images), 64)]
    return torch.from_numpy(np.concatenate(chunks))


def glyph_tensor(side: int, images: Sequence[Image.Image] | None = None) -> torch.Tensor:
    """Every drawn glyph (or ``images``) at ``side`` pixels: [N, 4, side, side] premultiplied uint8."""
    if images is None:
        _, images = load_glyphs()
    chunks = []
    for start in range(0, len(images), 64):
        pixels = premultiplied(images[start : start + 64])
        chunks.append((downsample(pixels, side) * 255).round().to(torch.uint8))
    return torch.cat(chunks)


def build_atlas(bases: np.ndarray, columns: int = ATLAS_COLUMNS) -> Image.Image:
    """[N, S, S, 4] straight uint8 tiles -> one RGBA image, row by row."""
    count, side = bases.shape[0], bases.shape[1]
    rows = (count + columns - 1) // columns
    atlas = np.zeros((rows * side, columns * side, 4), dtype=np.uint8)
    for index in range(count):
        row, column = divmod(index, columns)
        atlas[row * side : (row + 1) * side, column * side : (column + 1) * side] = bases[index]
    return Image.fromarray(atlas, "RGBA")


def read_atlas(atlas: Image.Image, count: int, side: int = BASE_SIDE, columns: int = ATLAS_COLUMNS) -> torch.Tensor:
    """The atlas back as [count, side, side, 4] straight-alpha uint8 tiles (no copy beyond the decode)."""
    array = np.asarray(atlas if atlas.mode == "RGBA" else atlas.convert("RGBA"))
    rows = (count + columns - 1) // columns
    tiles = array[: rows * side].reshape(rows, side, columns, side, 4).transpose(0, 2, 1, 3, 4)
    return torch.from_numpy(np.ascontiguousarray(tiles.reshape(rows * columns, side, side, 4)[:count]))
