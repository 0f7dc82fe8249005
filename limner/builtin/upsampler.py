"""The learned upsampler: a small convolutional network that makes an RGBA image four times larger with sharp edges.

It is trained on the emoji glyphs at 128x128 (the font draws them at 136 px) from the same glyphs at 32x32,
so it learns what an emoji edge looks like; emoji are flat colours with crisp outlines at every scale, so the
same network applied twice takes a 64x64 base to 1024x1024 (``upsample_to``). It works on premultiplied
RGBA (colour times alpha, in [0, 1]), which keeps outlines from picking up a dark fringe, and predicts a
correction to a bicubic upscale: where it has nothing to add, the answer is the plain upscale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FACTOR = 4
CHANNELS = 4  # premultiplied RGBA


class Upsampler(nn.Module):
    """Features at the input resolution, then a pixel shuffle by ``FACTOR`` (cheap: convolutions at low res)."""

    def __init__(self, width: int = 32, depth: int = 4) -> None:
        super().__init__()
        self.width, self.depth = width, depth
        layers: list[nn.Module] = [nn.Conv2d(CHANNELS, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True)]
        layers += [nn.Conv2d(width, CHANNELS * FACTOR * FACTOR, 3, padding=1), nn.PixelShuffle(FACTOR)]
        self.body = nn.Sequential(*layers)

    def forward(self, premultiplied: torch.Tensor) -> torch.Tensor:
        """[B, 4, H, W] in [0, 1] -> [B, 4, 4H, 4W] in [0, 1]."""
        base = F.interpolate(premultiplied, scale_factor=FACTOR, mode="bicubic", align_corners=False)
        out = base + self.body(premultiplied)
        alpha = out[:, 3:].clamp(0, 1)
        return torch.cat([torch.minimum(out[:, :3].clamp(min=0), alpha), alpha], dim=1)


def downsample(premultiplied: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bicubic reduction: how the training inputs and the shipped 64x64 bases are made."""
    return F.interpolate(premultiplied, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp(
        0, 1
    )


def stages_for(base: int, side: int) -> int:
    """How many passes take ``base`` pixels to at least ``side`` (none when the base is big enough)."""
    stages, size = 0, base
    while size < side:
        size *= FACTOR
        stages += 1
    return stages


@torch.inference_mode()
def upsample_to(model: Upsampler, premultiplied: torch.Tensor, side: int) -> torch.Tensor:
    """Upsample by passes of ``FACTOR`` until at least ``side`` pixels; the caller reduces to exactly ``side``."""
    out = premultiplied
    for _ in range(stages_for(out.shape[-1], side)):
        out = model(out)
    return out
