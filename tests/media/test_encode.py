from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from limner.core.errors import InvalidRequest
from limner.media.encode import FORMAT_BY_MIME, MIME_BY_FORMAT, encode_image, read_png_text

from .conftest import make_image

MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "jpeg": b"\xff\xd8\xff", "webp": b"RIFF"}


def noisy(size: tuple[int, int] = (96, 96)) -> Image.Image:
    """Random pixels: quality settings make a large, reliable difference to their size."""
    return Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def half_transparent() -> Image.Image:
    image = Image.new("RGBA", (8, 8), (255, 0, 0, 255))
    image.paste((0, 0, 0, 0), (0, 0, 4, 8))
    return image


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_each_format_round_trips(fmt: str) -> None:
    data, mime = encode_image(make_image((40, 30)), fmt)  # type: ignore[arg-type]
    assert mime == MIME_BY_FORMAT[fmt] == f"image/{fmt}"
    assert FORMAT_BY_MIME[mime] == fmt
    assert data.startswith(MAGIC[fmt])
    image = decode(data)
    assert image.size == (40, 30)
    assert image.format == fmt.upper()


def test_png_metadata_round_trips_as_text_chunks() -> None:
    metadata = {"prompt": "a red fox", "seed": "42", "parameters": "steps: 20 — «unicode» ok"}
    data, _ = encode_image(make_image(), "png", metadata=metadata)
    assert read_png_text(data) == metadata
    assert b"tEXtprompt\x00a red fox" in data


def test_read_png_text_of_other_formats_is_empty() -> None:
    data, _ = encode_image(make_image(), "jpeg", metadata={"prompt": "x"})
    assert read_png_text(data) == {}


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_more_compression_means_fewer_bytes(fmt: str) -> None:
    image = noisy()
    light, _ = encode_image(image, fmt, compression=5)  # type: ignore[arg-type]
    default, _ = encode_image(image, fmt)  # type: ignore[arg-type]
    heavy, _ = encode_image(image, fmt, compression=80)  # type: ignore[arg-type]
    assert len(light) > len(default) > len(heavy)


def test_jpeg_flattens_alpha_onto_white() -> None:
    data, _ = encode_image(half_transparent(), "jpeg", compression=0)
    image = decode(data)
    assert image.mode == "RGB"
    red, green, blue = image.getpixel((1, 4))  # type: ignore[misc]
    assert min(red, green, blue) > 240
    red, green, blue = image.getpixel((6, 4))  # type: ignore[misc]
    assert red > 200 and green < 60 and blue < 60


@pytest.mark.parametrize(
    ("fmt", "background", "mode"),
    [
        ("webp", "transparent", "RGBA"),
        ("webp", "auto", "RGBA"),
        ("webp", "opaque", "RGB"),
        ("png", None, "RGBA"),
        ("png", "transparent", "RGBA"),
        ("png", "opaque", "RGB"),
    ],
)
def test_alpha_is_kept_unless_opaque(fmt: str, background: str | None, mode: str) -> None:
    data, _ = encode_image(half_transparent(), fmt, background=background)  # type: ignore[arg-type]
    assert decode(data).mode == mode


def transparent_colour(mode: str) -> Image.Image:
    """A PNG with no alpha band whose tRNS chunk makes one colour transparent (black, here the left half)."""
    image = Image.new(mode, (8, 8), "white")
    image.paste("black", (0, 0, 4, 8))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", transparency=0 if mode == "L" else (0, 0, 0))
    return decode(buffer.getvalue())


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_a_transparent_colour_is_alpha_too(mode: str) -> None:
    image = transparent_colour(mode)
    assert image.mode == mode and "transparency" in image.info
    kept = decode(encode_image(image, "png", background="transparent")[0])
    assert kept.mode == "RGBA"
    assert kept.getpixel((1, 4))[3] == 0 and kept.getpixel((6, 4))[3] == 255  # type: ignore[index]
    flat = decode(encode_image(image, "jpeg", background="#0000ff", compression=0)[0])
    red, green, blue = flat.getpixel((1, 4))  # type: ignore[misc]
    assert blue > 200 and red < 60 and green < 60, "the transparent colour shows the matte"


def test_colour_background_is_the_matte() -> None:
    data, _ = encode_image(half_transparent(), "png", background="#0000ff")
    assert decode(data).convert("RGB").getpixel((1, 4)) == (0, 0, 255)


def test_opaque_images_stay_rgb_even_when_transparent_is_asked() -> None:
    data, _ = encode_image(make_image(mode="L"), "webp", background="transparent")
    assert decode(data).mode == "RGB"


@pytest.mark.parametrize("compression", [-1, 101])
def test_compression_out_of_range_is_invalid(compression: int) -> None:
    with pytest.raises(InvalidRequest) as caught:
        encode_image(make_image(), "jpeg", compression=compression)
    assert caught.value.code == "invalid_request"
    assert caught.value.param == "output_compression"
    assert caught.value.message == f"output_compression must be between 0 and 100, got {compression}"


def test_unknown_background_is_invalid() -> None:
    with pytest.raises(InvalidRequest) as caught:
        encode_image(half_transparent(), "png", background="plaid")
    assert caught.value.code == "invalid_request"
    assert caught.value.param == "background"
    assert caught.value.message == "background must be 'transparent', 'opaque', 'auto' or a colour, got 'plaid'"


def test_unknown_format_is_invalid() -> None:
    with pytest.raises(InvalidRequest) as caught:
        encode_image(make_image(), "gif")  # type: ignore[arg-type]
    assert caught.value.code == "invalid_request"
    assert caught.value.param == "output_format"
    assert caught.value.message == "unsupported output format 'gif'; use png, jpeg or webp"
