"""Turning generated pixels into the bytes a client asked for (PNG, JPEG or WebP).

``compression`` follows OpenAI's ``output_compression``: 0-100 percent compression, so quality is
``100 - compression``; it applies to JPEG and WebP only. ``background``: ``"transparent"`` or
``"auto"``/``None`` keep an image's alpha where the format can hold it, ``"opaque"`` (and any JPEG)
flattens onto white, and a CSS colour (``"#202020"``, ``"black"``) flattens onto that colour.
"""

from __future__ import annotations

import io
import struct
import weakref
import zlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Literal

from PIL import Image, ImageColor
from PIL.PngImagePlugin import PngImageFile, PngInfo

from limner.core.errors import InvalidRequest, LimnerError
from limner.core.imaging import has_alpha

ImageFormat = Literal["png", "jpeg", "webp"]

MIME_BY_FORMAT: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
FORMAT_BY_MIME: dict[str, str] = {mime: fmt for fmt, mime in MIME_BY_FORMAT.items()}
DEFAULT_QUALITY = 90
PNG_SAVE_OPTIONS: Final[Mapping[str, int]] = MappingProxyType({"compress_level": 1, "compress_type": zlib.Z_RLE})
"""How every PNG limner makes is compressed: zlib's run-length strategy (at level 1; every level from 1 to 9
gives the same bytes with it). Chosen by ``python -m benchmarks.png_levels`` (``REPORT.md``, "PNG
compression") as the least encode time plus sending the base64 answer at 100 Mbit/s, over zlib levels 0-9
and Pillow's other strategies, on the built-in model's images upscaled to 1024x1024 and on photograph-like
1024x1024 images. Against level 6, zlib's default and limner's before: the upscaled emoji encode in 41
instead of 144 ms for 13% more bytes (level 6 answers sooner only on links under about 6 Mbit/s), the
photograph-like images in 83 instead of 201 ms and 10% smaller (a shared Xeon core, Pillow 13, zlib-ng)."""

_KEEP_ALPHA = frozenset({None, "auto", "transparent"})

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PLAIN_CHUNKS = frozenset({b"IHDR", b"IDAT", b"IEND"})
"""A PNG holding only these decodes to exactly its pixels: no palette, colour profile, gamma, EXIF rotation,
transparent colour or text that re-encoding would drop or change."""
_MODE_BY_COLOUR_TYPE = {2: "RGB", 6: "RGBA"}
_sources: dict[int, bytes] = {}
"""The encoded bytes an image was decoded from, by ``id`` while the image lives (``remember_source``)."""


def quality_for(compression: int | None) -> int:
    """JPEG/WebP quality for an OpenAI-style ``output_compression`` percentage."""
    if compression is None:
        return DEFAULT_QUALITY
    if not 0 <= compression <= 100:
        raise InvalidRequest(
            f"output_compression must be between 0 and 100, got {compression}", param="output_compression"
        )
    return 100 - compression


def _matte(background: str | None) -> tuple[int, int, int]:
    if background in _KEEP_ALPHA or background == "opaque":
        return (255, 255, 255)
    assert background is not None
    try:
        red, green, blue, *_ = ImageColor.getrgb(background)
    except ValueError:
        raise InvalidRequest(
            f"background must be 'transparent', 'opaque', 'auto' or a colour, got {background!r}", param="background"
        ) from None
    return (red, green, blue)


def keeps_alpha(image: Image.Image, fmt: str, background: str | None) -> bool:
    """Whether ``encode_image`` delivers ``image`` with its transparency: the format holds alpha, ``background``
    does not flatten it, and the image has some (what OpenAI reports as ``background: transparent``)."""
    return fmt != "jpeg" and background in _KEEP_ALPHA and has_alpha(image)


def _prepare(image: Image.Image, fmt: ImageFormat, background: str | None) -> Image.Image:
    """RGB, or RGBA when the format and ``background`` allow alpha and the image has some."""
    matte = _matte(background)
    if not has_alpha(image):
        return image if image.mode == "RGB" else image.convert("RGB")
    rgba = image if image.mode == "RGBA" else image.convert("RGBA")
    if fmt != "jpeg" and background in _KEEP_ALPHA:
        return rgba
    flat = Image.new("RGB", rgba.size, matte)
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return flat


def encode_image(
    image: Image.Image,
    fmt: ImageFormat,
    *,
    compression: int | None = None,
    metadata: dict[str, str] | None = None,
    background: str | None = None,
    full_chroma: bool = False,
) -> tuple[bytes, str]:
    """Encode ``image`` as ``fmt``; return the bytes and their MIME type.

    ``metadata`` becomes PNG text chunks (tEXt, or iTXt for non-Latin-1 values); JPEG and WebP drop it.
    ``full_chroma``: a JPEG keeps colour at full resolution (4:4:4, about a quarter larger) instead of halving
    it both ways (4:2:0), which would erase an invisible watermark.
    """
    if fmt not in MIME_BY_FORMAT:
        raise InvalidRequest(f"unsupported output format {fmt!r}; use png, jpeg or webp", param="output_format")
    quality = quality_for(compression)
    prepared = _prepare(image, fmt, background)
    buffer = io.BytesIO()
    try:
        if fmt == "png":
            info = PngInfo()
            for name, value in (metadata or {}).items():
                info.add_text(name, value)
            prepared.save(buffer, "PNG", pnginfo=info, **PNG_SAVE_OPTIONS)
        elif fmt == "jpeg":
            prepared.save(buffer, "JPEG", quality=quality, optimize=True, subsampling=0 if full_chroma else -1)
        else:
            prepared.save(buffer, "WEBP", quality=quality, method=4)
    except (OSError, ValueError) as exc:
        raise LimnerError(f"could not encode the image as {fmt}: {exc}") from exc
    return buffer.getvalue(), MIME_BY_FORMAT[fmt]


def remember_source(image: Image.Image, data: bytes) -> None:
    """Note that ``image`` was decoded from ``data`` (until ``image`` is collected), so that ``reuse_png`` can
    deliver those bytes instead of encoding the pixels again. An image made from it (resized, converted,
    copied) is another object and is not covered."""
    key = id(image)
    _sources[key] = data
    weakref.finalize(image, _sources.pop, key, None)


def source_of(image: Image.Image) -> bytes | None:
    """The bytes ``image`` was decoded from, if ``remember_source`` was told."""
    return _sources.get(id(image))


def reuse_png(
    image: Image.Image, data: bytes, *, background: str | None = None, metadata: dict[str, str] | None = None
) -> bytes | None:
    """``data``, the PNG ``image`` was decoded from, with ``metadata`` added as text chunks: what
    ``encode_image(image, "png", ...)`` would deliver, pixel for pixel, without compressing them again.
    None when that would not hold (another format or bit depth, a palette, any ancillary chunk, alpha that
    ``background`` flattens, bytes that do not describe ``image``): encode the image then."""
    _matte(background)  # refuses what encode_image refuses
    chunks = _plain_png_chunks(data)
    if chunks is None:
        return None
    width, height, depth, colour, _compression, _filter, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    if depth != 8 or interlace != 0 or _MODE_BY_COLOUR_TYPE.get(colour) != image.mode or image.size != (width, height):
        return None
    if image.mode == "RGBA" and background not in _KEEP_ALPHA:
        return None
    info = PngInfo()
    for name, value in (metadata or {}).items():
        info.add_text(name, value)
    ihdr_end = len(PNG_SIGNATURE) + 12 + len(chunks[0][1])
    text = b"".join(_chunk(cid, body) for cid, body, _after_idat in info.chunks)
    return data[:ihdr_end] + text + data[ihdr_end:]


def _plain_png_chunks(data: bytes) -> list[tuple[bytes, memoryview]] | None:
    """The chunks of a well-formed PNG made only of IHDR, IDAT and IEND (in that order), every CRC right,
    else None. Bodies are views into ``data``: checking a megabyte costs one CRC pass, not copies."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    view = memoryview(data)
    chunks: list[tuple[bytes, memoryview]] = []
    offset = len(PNG_SIGNATURE)
    while offset + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, offset)
        cid = data[offset + 4 : offset + 8]
        end = offset + 12 + length
        if cid not in _PLAIN_CHUNKS or end > len(data):
            return None
        if struct.unpack_from(">I", data, end - 4)[0] != zlib.crc32(view[offset + 4 : end - 4]):
            return None
        chunks.append((cid, view[offset + 8 : end - 4]))
        offset = end
        if cid == b"IEND":
            break
    ordered = len(chunks) >= 3 and chunks[0][0] == b"IHDR" and len(chunks[0][1]) == 13
    if not ordered or chunks[-1][0] != b"IEND" or offset != len(data):
        return None
    return chunks if all(cid == b"IDAT" for cid, _ in chunks[1:-1]) else None


def open_plain_png(data: bytes, max_pixels: int) -> Image.Image | None:
    """``data`` opened but not decoded, when it is a plain 8-bit RGB or RGBA PNG (only IHDR, IDAT and IEND,
    every CRC right) of at most ``max_pixels``: the image a full decode would give, whose pixels are
    decompressed only if something needs them (a resize, a style, another format). Passing a provider's
    PNG through then costs a CRC pass instead of a decode. None: decode ``data`` fully instead."""
    chunks = _plain_png_chunks(data)
    if chunks is None:
        return None
    width, height, depth, colour, _compression, _filter, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    mode = _MODE_BY_COLOUR_TYPE.get(colour)
    if depth != 8 or interlace != 0 or mode is None or not 0 < width * height <= max_pixels:
        return None
    image = Image.open(io.BytesIO(data), formats=("PNG",))
    if image.mode != mode or image.size != (width, height):
        return None
    remember_source(image, data)
    return image


def _chunk(cid: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + cid + body + struct.pack(">I", zlib.crc32(cid + body))


def read_png_text(data: bytes) -> dict[str, str]:
    """The text chunks of a PNG (empty for any other format); used to check embedded metadata."""
    with Image.open(io.BytesIO(data)) as image:
        if not isinstance(image, PngImageFile):
            return {}
        return {str(name): str(value) for name, value in image.text.items()}  # reads chunks after IDAT too
