"""Pixel sizes to the shapes providers take: aspect-ratio names and preset resolutions.

The service has already planned the output size and scales whatever comes back to it, so these
only pick the closest thing a provider offers; they never refuse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def ratio_value(ratio: str) -> float:
    width, height = ratio.split(":")
    return int(width) / int(height)


def nearest_ratio(width: int, height: int, choices: Sequence[str]) -> str:
    """The choice ("16:9", ...) closest to ``width``/``height`` on a log scale (2:1 is as far as 1:2)."""
    target = math.log(width / height)
    return min(choices, key=lambda ratio: abs(math.log(ratio_value(ratio)) - target))


def nearest_size(width: int, height: int, sizes: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The allowed size closest in shape, then in area."""
    return min(
        sizes,
        key=lambda size: (
            round(abs(math.log(size[0] / size[1]) - math.log(width / height)), 3),
            abs(math.log(size[0] * size[1] / (width * height))),
        ),
    )


def resolution_preset(width: int, height: int, presets: Sequence[str] = ("1K", "2K")) -> str:
    """The preset ("1K" = 1024x1024 pixels, "2K", "4K") whose area is nearest on a log scale."""
    area = width * height
    return min(presets, key=lambda preset: abs(math.log(area / (int(preset[:-1]) * 1024) ** 2)))
