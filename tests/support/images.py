"""Comparing delivered images by what they show: each file carries its own signed Content Credentials (a new
manifest every time), so the same picture made twice is the same pixels, not the same bytes."""

from __future__ import annotations

import io

from PIL import Image


def pixels(data: bytes) -> tuple[str, tuple[int, int], bytes]:
    """The decoded picture of an encoded image: mode, size and pixel bytes."""
    image = Image.open(io.BytesIO(data))
    return image.mode, image.size, image.tobytes()
