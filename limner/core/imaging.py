"""Pixel operations the service applies around engines: bounding and composing inputs, watermarking outputs."""

from __future__ import annotations

import math

from PIL import Image, ImageDraw, ImageFont

WATERMARK_TEXT = "limner"


def shrunk_size(size: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    """``size`` scaled down, keeping its shape, to at most ``max_pixels``; unchanged when it fits."""
    width, height = size
    if width * height <= max_pixels:
        return size
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def shrink(image: Image.Image, max_pixels: int) -> Image.Image:
    """``image`` at most ``max_pixels``, keeping its shape: what an engine will use of an input, so that
    nothing later (padding, composing, converting) works on more pixels than the request needs.

    A whole-number box reduction first (cheap, and it frees the full-size pixels early), then Lanczos."""
    target = shrunk_size(image.size, max_pixels)
    if target == image.size:
        return image
    factor = min(image.width // target[0], image.height // target[1])
    if factor >= 2:
        image = image.reduce(factor)
    return image.resize(target, Image.Resampling.LANCZOS) if image.size != target else image


def compose_layout(images: list[Image.Image], background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Lay 2-4 images out left to right (image 1 leftmost), each scaled to a common height.

    This is how several source images reach an engine that takes one: the layout becomes the
    image-to-image source, so "image 1" and "image 2" keep their order and place in the prompt's sense.
    """
    height = min(512, max(image.height for image in images))
    scaled = [
        image.convert("RGB").resize(
            (max(1, round(image.width * height / image.height)), height), Image.Resampling.LANCZOS
        )
        for image in images
    ]
    canvas = Image.new("RGB", (sum(image.width for image in scaled), height), background)
    x = 0
    for image in scaled:
        canvas.paste(image, (x, 0))
        x += image.width
    return canvas


def add_watermark(image: Image.Image, text: str = WATERMARK_TEXT) -> Image.Image:
    """A visible, semi-transparent mark in the bottom-right corner, sized to the image."""
    base = image.convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    size = max(10, base.width // 16)
    font = ImageFont.load_default(size=size)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    margin = max(2, size // 3)
    x = base.width - (right - left) - margin
    y = base.height - (bottom - top) - margin - top
    pad = max(1, size // 6)
    draw.rectangle((x - pad, y + top - pad, x + right - left + pad, y + bottom + pad), fill=(0, 0, 0, 110))
    draw.text((x, y), text, font=font, fill=(255, 255, 255, 220))
    marked = Image.alpha_composite(base, overlay)
    return marked if image.mode == "RGBA" else marked.convert("RGB")


def has_alpha(image: Image.Image) -> bool:
    """Whether ``image`` has any transparency for ``convert("RGBA")`` to keep: an alpha band, a palette with
    alpha, or a transparent colour in ``info`` (a grey or RGB PNG's tRNS chunk, a GIF's transparent index)."""
    return image.has_transparency_data
