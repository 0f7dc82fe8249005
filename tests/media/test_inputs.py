"""ImageDecoder, base64 and data URLs: every accepted format, and every way untrusted bytes can be bad."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import pillow_heif
import pytest
from PIL import Image

from limner.core.errors import InvalidImage
from limner.media.inputs import ImageDecoder, decode_base64, parse_data_url

from .conftest import image_bytes, make_image

pillow_heif.register_heif_opener()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` without carrying the pixels: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def heif_bytes(brand: bytes | None = None) -> bytes:
    data = image_bytes("HEIF", (32, 24))
    assert data[4:12] == b"ftypheic"
    return data if brand is None else data[:8] + brand + data[12:]


def assert_invalid(exc: pytest.ExceptionInfo[InvalidImage], message: str, param: str | None = None) -> None:
    assert type(exc.value) is InvalidImage
    assert exc.value.code == "invalid_image"
    assert exc.value.status == 400
    assert exc.value.message == message
    assert exc.value.param == param


@pytest.fixture
def decoder() -> ImageDecoder:
    return ImageDecoder()


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (image_bytes("PNG"), "image/png"),
        (image_bytes("JPEG"), "image/jpeg"),
        (image_bytes("WEBP"), "image/webp"),
        (heif_bytes(), "image/heic"),
        (heif_bytes(b"mif1"), "image/heif"),
    ],
    ids=["png", "jpeg", "webp", "heic", "heif"],
)
def test_accepted_formats_decode_to_rgb(decoder: ImageDecoder, data: bytes, mime: str) -> None:
    source = decoder.decode(data, "image 1")
    assert source.label == "image 1"
    assert source.mime_type == mime
    assert source.image.mode == "RGB"
    assert source.image.size == (32, 24)
    source.image.getpixel((0, 0))  # fully loaded, independent of the closed file


@pytest.mark.parametrize(
    ("fmt", "mode", "expected"),
    [
        ("PNG", "RGBA", "RGBA"),
        ("PNG", "LA", "RGBA"),
        ("PNG", "L", "RGB"),
        ("PNG", "P", "RGB"),
        ("WEBP", "RGBA", "RGBA"),
        ("JPEG", "CMYK", "RGB"),
    ],
)
def test_modes_are_normalised(decoder: ImageDecoder, fmt: str, mode: str, expected: str) -> None:
    assert decoder.decode(image_bytes(fmt, mode=mode), "mask").image.mode == expected


def test_exif_orientation_is_applied(decoder: ImageDecoder) -> None:
    # 40x20: left half red, right half blue; orientation 6 means "rotate 90 degrees clockwise to view".
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif, quality=95)

    upright = decoder.decode(buffer.getvalue(), "image 1").image

    assert upright.size == (20, 40)
    top = upright.getpixel((10, 5))
    bottom = upright.getpixel((10, 35))
    assert isinstance(top, tuple) and isinstance(bottom, tuple)
    assert top[0] > 200 and top[2] < 60  # the red (left) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_corrupt_bytes(decoder: ImageDecoder) -> None:
    with pytest.raises(InvalidImage) as caught:
        decoder.decode(b"this is not an image at all", "image 2", param="image")
    assert_invalid(caught, "image 2: not a valid image file (could not decode)", param="image")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_files_fail(decoder: ImageDecoder, fmt: str) -> None:
    data = image_bytes(fmt, (64, 64))
    with pytest.raises(InvalidImage) as caught:
        decoder.decode(data[: len(data) * 2 // 3], "image 1")
    assert caught.value.code == "invalid_image"
    assert caught.value.message in {
        "image 1: image data is truncated or corrupt (could not decode)",
        "image 1: not a valid image file (could not decode)",  # WebP checks its length up front
    }


def test_truncated_png_fails_on_load(decoder: ImageDecoder) -> None:
    data = image_bytes("PNG", (64, 64))
    with pytest.raises(InvalidImage) as caught:
        decoder.decode(data[: len(data) // 2], "image 1")
    assert_invalid(caught, "image 1: image data is truncated or corrupt (could not decode)")


@pytest.mark.parametrize(("fmt", "name"), [("GIF", "GIF"), ("BMP", "BMP"), ("TIFF", "TIFF"), ("AVIF", "AVIF")])
def test_other_formats_are_refused_by_name(decoder: ImageDecoder, fmt: str, name: str) -> None:
    with pytest.raises(InvalidImage) as caught:
        decoder.decode(image_bytes(fmt), "image 1")
    assert_invalid(caught, f"image 1: unsupported format {name}; use PNG, JPEG, WebP, HEIC or HEIF")


def test_empty_file(decoder: ImageDecoder) -> None:
    with pytest.raises(InvalidImage) as caught:
        decoder.decode(b"", "image 1")
    assert_invalid(caught, "image 1: empty file")


def test_oversized_bytes_are_refused_before_decoding() -> None:
    decoder = ImageDecoder(max_bytes=1000)
    with pytest.raises(InvalidImage) as caught:
        decoder.decode(b"\x89PNG" + b"\0" * 1200, "image 1", param="image[]")
    assert_invalid(caught, "image 1: 1204 bytes exceeds the 1000-byte limit", param="image[]")


def test_default_byte_limit_message() -> None:
    with pytest.raises(InvalidImage) as caught:
        ImageDecoder().decode(b"\0" * (30 * 2**20), "image 1")
    assert_invalid(caught, "image 1: 31457280 bytes exceeds the 26214400-byte limit")


def test_pixel_limit_is_checked_from_the_header(decoder: ImageDecoder) -> None:
    with pytest.raises(InvalidImage) as caught:
        decoder.decode(png_header_only(8000, 6000), "mask", param="mask")
    assert_invalid(caught, "mask: 8000x6000 pixels exceeds the 40000000-pixel limit", param="mask")


def test_small_pixel_limit() -> None:
    with pytest.raises(InvalidImage) as caught:
        ImageDecoder(max_pixels=100).decode(image_bytes("PNG", (11, 10)), "image 3")
    assert_invalid(caught, "image 3: 11x10 pixels exceeds the 100-pixel limit")


def test_decompression_bomb_refused_by_pillow_is_translated(decoder: ImageDecoder) -> None:
    with pytest.raises(InvalidImage) as caught:
        decoder.decode(png_header_only(100_000, 100_000), "mask")
    assert_invalid(caught, "mask: 10000000000 pixels exceeds the 40000000-pixel limit")
    assert isinstance(caught.value.__cause__, Image.DecompressionBombError)


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_warning_as_error_is_translated(decoder: ImageDecoder) -> None:
    with pytest.raises(InvalidImage) as caught:
        decoder.decode(png_header_only(10_000, 10_000), "mask")
    assert_invalid(caught, "mask: 100000000 pixels exceeds the 40000000-pixel limit")


def test_base64_tolerates_whitespace_missing_padding_and_urlsafe_alphabet() -> None:
    data = bytes(range(256)) * 3 + b"\xfb\xff"
    encoded = base64.b64encode(data).decode()
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    assert decode_base64(wrapped, "image 1") == data
    assert decode_base64(encoded.rstrip("="), "image 1") == data
    assert decode_base64(base64.urlsafe_b64encode(data).decode().rstrip("="), "image 1") == data


@pytest.mark.parametrize(
    ("value", "reason"),
    [("abc$def", "not valid base64 data"), ("abcde", "not valid base64 data (bad length)"), ("  ", "empty file")],
)
def test_bad_base64(value: str, reason: str) -> None:
    with pytest.raises(InvalidImage) as caught:
        decode_base64(value, "image 2", param="image")
    assert_invalid(caught, f"image 2: {reason}", param="image")


def test_data_url() -> None:
    png = image_bytes("PNG")
    encoded = base64.b64encode(png).decode()
    assert parse_data_url(f"data:image/png;base64,{encoded}") == ("image/png", png)
    assert parse_data_url(f"DATA:Image/PNG;charset=binary;base64,{encoded.rstrip('=')}") == ("image/png", png)
    assert parse_data_url(f"data:;base64,{encoded}") == (None, png)
    assert parse_data_url("data:text/plain,hello%20there") == ("text/plain", b"hello there")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("data:image/png;base64", "not a valid data URL"),
        ("image/png;base64,AAAA", "not a valid data URL"),
        ("data:image/png;base64,*&^%", "not valid base64 data"),
        ("data:image/png;base64,", "empty file"),
    ],
)
def test_bad_data_url(value: str, reason: str) -> None:
    with pytest.raises(InvalidImage) as caught:
        parse_data_url(value, "mask", param="mask")
    assert_invalid(caught, f"mask: {reason}", param="mask")


def test_decoded_image_is_independent_of_input_buffer(decoder: ImageDecoder) -> None:
    data = bytearray(image_bytes("PNG"))
    source = decoder.decode(bytes(data), "image 1")
    data[:] = b"\0" * len(data)
    assert source.image.tobytes() == make_image().tobytes()


def test_inputs_are_shrunk_to_what_the_request_keeps_as_they_decode() -> None:
    decoder = ImageDecoder()
    wide = decoder.decode(image_bytes("PNG", (4000, 1000)), "image", keep_pixels=250_000)
    assert wide.image.size == (1000, 250) and wide.original_size == (4000, 1000) and wide.size == (4000, 1000)
    small = decoder.decode(image_bytes("PNG", (40, 10)), "image", keep_pixels=250_000)
    assert small.image.size == (40, 10) and small.size == (40, 10)


def test_a_shrunk_jpeg_keeps_its_exif_orientation() -> None:
    """JPEGs are decoded at a reduced scale (``draft``); the picture is still turned upright afterwards."""
    image = Image.new("RGB", (4000, 1000), (250, 10, 10))
    exif = image.getexif()
    exif[0x0112] = 6  # stored on its side: shown rotated 90 degrees clockwise
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes())
    decoded = ImageDecoder().decode(buffer.getvalue(), "image", keep_pixels=250_000)
    assert decoded.image.size == (250, 1000) and decoded.size == (1000, 4000)
    red, _, _ = decoded.image.getpixel((125, 500))  # type: ignore[misc]
    assert red > 200


def test_a_thin_image_is_refused_before_it_is_decoded() -> None:
    decoder = ImageDecoder(max_aspect_ratio=8)
    with pytest.raises(InvalidImage) as exc:
        decoder.decode(png_header_only(20000, 2000), "image 3", param="image")
    assert_invalid(exc, "image 3: 20000x2000 has an aspect ratio of 10.0:1; at most 8:1 is accepted", "image")
    assert decoder.decode(image_bytes("PNG", (80, 10)), "image").size == (80, 10), "8:1 itself is accepted"
