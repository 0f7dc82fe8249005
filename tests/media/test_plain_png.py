"""``open_plain_png``: a provider's PNG opened without decoding only when it is plain, whole and within limits."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from limner.media.encode import open_plain_png, source_of


def png(mode: str = "RGB", size: tuple[int, int] = (64, 48), **save: object) -> bytes:
    image = Image.new(mode, size, (10, 200, 30, 128)[: len(mode)] if mode in ("RGB", "RGBA") else 7)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **save)  # type: ignore[arg-type]
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_a_plain_png_opens_undecoded_with_its_size_mode_and_source(mode: str) -> None:
    data = png(mode)
    image = open_plain_png(data, max_pixels=64 * 48)
    assert image is not None
    assert (image.size, image.mode) == ((64, 48), mode)
    assert source_of(image) == data, "its bytes are remembered for delivery as sent"
    assert image.convert("RGB").getpixel((0, 0)) == (10, 200, 30), "and it decodes when asked"


def test_text_chunks_palettes_grey_and_other_depths_are_decoded_fully() -> None:
    info = PngInfo()
    info.add_text("k", "v")
    for data in (png(pnginfo=info), png("P"), png("L"), png("I;16")):
        assert open_plain_png(data, max_pixels=10**6) is None


def test_a_damaged_or_oversized_png_is_left_to_the_full_decoder() -> None:
    data = png()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF  # inside IDAT: its CRC no longer matches
    assert open_plain_png(bytes(flipped), max_pixels=10**6) is None
    assert open_plain_png(data[:-5], max_pixels=10**6) is None, "truncated"
    assert open_plain_png(data + b"junk", max_pixels=10**6) is None, "bytes after IEND"
    assert open_plain_png(data, max_pixels=64 * 48 - 1) is None, "more pixels than allowed"
    assert open_plain_png(b"GIF89a" + data[6:], max_pixels=10**6) is None
