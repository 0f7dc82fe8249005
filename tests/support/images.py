"""Comparing delivered images by what they show: each file carries its own signed Content Credentials (a new
manifest every time), so the same picture made twice is the same pixels, not the same bytes."""

from __future__ import annotations

import io

from PIL import Image


def pixels(data: bytes) -> tuple[str, tuple[int, int], bytes]:
    """The decoded picture of an encoded image: mode, size and pixel bytes."""
    image = Image.open(io.BytesIO(data))
    return image.mode, image.size, image.tobytes()


def pixel_at(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    """One pixel of a multi-band image as a tuple (Pillow's ``getpixel`` is typed for every mode at once)."""
    pixel = image.getpixel(xy)
    assert isinstance(pixel, tuple), f"{image.mode} has one band"
    return pixel
