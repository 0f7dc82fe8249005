"""Image bytes for provider payloads: PNG uploads and ``data:`` URLs.

Small images are encoded on the event loop (a thread hop would cost more than the work); large ones
in a thread, so that one big upload cannot stall every other request.
"""

from __future__ import annotations

import asyncio
import base64
import io

from PIL import Image

INLINE_BYTES = 64 * 1024
"""Results up to this size are decoded on the event loop."""
INLINE_PIXELS = 256 * 256
"""Inputs up to this many pixels are encoded on the event loop."""


def png_bytes(image: Image.Image) -> bytes:
    """Lossless bytes to upload; PNG keeps an alpha channel (masks, transparent edits)."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


async def encode_png(image: Image.Image) -> bytes:
    if image.width * image.height <= INLINE_PIXELS:
        return png_bytes(image)
    return await asyncio.to_thread(png_bytes, image)


def data_url(data: bytes, mime_type: str = "image/png") -> str:
    return f"data:{mime_type};base64,{base64.b64encode(data).decode()}"
