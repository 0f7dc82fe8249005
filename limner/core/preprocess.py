"""Control-image preprocessors that need no weights: what turns a photo into the map a control reads.

``canny`` is the Canny edge detector (Gaussian blur, Sobel gradients, thin edges kept where the gradient
peaks across them, two thresholds joined by hysteresis), in numpy, with the thresholds ControlNet's own
canny models were trained on
(100 and 200 on OpenCV's unnormalised 3x3 Sobel gradients). ``none`` takes the image as the map, for
clients that send one ready-made. White edges on black, RGB, the size of the input.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

PREPROCESSORS = ("canny", "none")
CANNY_LOW = 100.0
CANNY_HIGH = 200.0
TAN_22_5 = 0.41421356
HYSTERESIS_ROUNDS = 256
"""Rounds of growing strong edges into weak ones; more than any real edge needs, bounded all the same."""


def preprocess(image: Image.Image, name: str) -> Image.Image:
    """The control map for ``image`` made by the preprocessor ``name`` (one of ``PREPROCESSORS``)."""
    if name == "canny":
        return canny(image)
    if name == "none":
        return image.convert("RGB")
    raise ValueError(f"unknown preprocessor {name!r}: expected one of {', '.join(PREPROCESSORS)}")


def canny(image: Image.Image, low: float = CANNY_LOW, high: float = CANNY_HIGH) -> Image.Image:
    """Canny edges of ``image`` as a white-on-black RGB image of the same size."""
    gray = np.asarray(image.convert("L").filter(ImageFilter.GaussianBlur(1.4)), dtype=np.float32)
    padded = np.pad(gray, 1, mode="edge")
    gx = (padded[:-2, 2:] + 2 * padded[1:-1, 2:] + padded[2:, 2:]) - (
        padded[:-2, :-2] + 2 * padded[1:-1, :-2] + padded[2:, :-2]
    )
    gy = (padded[2:, :-2] + 2 * padded[2:, 1:-1] + padded[2:, 2:]) - (
        padded[:-2, :-2] + 2 * padded[:-2, 1:-1] + padded[:-2, 2:]
    )
    magnitude = np.hypot(gx, gy)
    thin = magnitude * _ridge(magnitude, gx, gy)
    strong = thin >= high
    weak = thin >= low
    edges = _hysteresis(strong, weak)
    return Image.fromarray((edges * 255).astype(np.uint8), "L").convert("RGB")


def _ridge(magnitude: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Where the gradient magnitude is a maximum across the edge (its direction rounded to 45 degrees)."""
    m = np.pad(magnitude, 1)
    center = m[1:-1, 1:-1]
    ax, ay = np.abs(gx), np.abs(gy)
    horizontal = ay <= TAN_22_5 * ax  # the gradient points along x: compare left and right
    vertical = ax <= TAN_22_5 * ay
    diagonal = ~(horizontal | vertical)
    falling = diagonal & (gx * gy > 0)  # down-right in image rows
    rising = diagonal & ~falling
    keep = horizontal & (center > m[1:-1, 2:]) & (center >= m[1:-1, :-2])
    keep |= falling & (center > m[2:, 2:]) & (center >= m[:-2, :-2])
    keep |= vertical & (center > m[2:, 1:-1]) & (center >= m[:-2, 1:-1])
    keep |= rising & (center > m[2:, :-2]) & (center >= m[:-2, 2:])
    return keep


def _hysteresis(strong: np.ndarray, weak: np.ndarray) -> np.ndarray:
    """Weak edge pixels joined (8-connected) to a strong one, grown until nothing changes."""
    edges = strong.copy()
    for _ in range(HYSTERESIS_ROUNDS):
        padded = np.pad(edges, 1)
        grown = np.zeros_like(edges)
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                grown |= padded[dy : dy + edges.shape[0], dx : dx + edges.shape[1]]
        grown &= weak
        if np.array_equal(grown, edges):
            break
        edges = grown
    return edges
