"""The PNG compression chosen by measurement (``PNG_SAVE_OPTIONS``) is lossless for every mode limner delivers."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from limner.media.encode import encode_image


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_png_keeps_every_pixel(mode: str) -> None:
    rng = np.random.default_rng(3)
    smooth = np.repeat(np.repeat(rng.integers(0, 256, (8, 8, len(mode)), dtype=np.uint8), 16, 0), 16, 1)
    grain = rng.integers(0, 4, smooth.shape, dtype=np.uint8)
    image = Image.fromarray(smooth + grain)  # runs and noise: both kinds of content the encoder meets
    data, _ = encode_image(image, "png", background="transparent")
    decoded = Image.open(io.BytesIO(data))
    assert decoded.mode == mode and decoded.tobytes() == image.tobytes()
