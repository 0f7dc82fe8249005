"""Turning client-supplied image references (bytes, data URLs, base64, URLs) into ``SourceImage``.

This is where untrusted image bytes enter limner, so every Pillow failure is translated here into
``InvalidImage`` with a message that names the image ("image 2", "mask") and says why.
Decoding is defensive: byte size first, then a header-only open to check the pixel count and the
aspect ratio before any pixels are decoded (decompression bombs, slivers that padding would blow up),
then a full ``load()`` so truncated files fail here and not deep inside an engine. What is kept is at
most the pixels the request can use (``keep_pixels``): JPEGs are decoded at a reduced scale where
possible, everything else is shrunk as soon as it is decoded, and at most ``decode_concurrency`` full
decodes run at once, so a request's memory is bounded by what it will use, not by what was uploaded.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import io
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote_to_bytes

import pillow_heif
from PIL import Image, ImageOps

from limner.core.errors import InvalidImage
from limner.core.imaging import has_alpha, shrink, shrunk_size
from limner.core.models import SourceImage
from limner.media.fetch import DEFAULT_MAX_BYTES, ImageFetcher, safe_url

__all__ = ["ImageDecoder", "ImageFetcher", "ImageLoader", "decode_base64", "parse_data_url"]

pillow_heif.register_heif_opener()

DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_ASPECT_RATIO = 8.0
"""Longest side over shortest side; a 20000x2000 sliver is refused before it is decoded."""
DEFAULT_DECODE_CONCURRENCY = 2
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "HEIF")
"""Pillow format names; pillow-heif reads both HEIC and HEIF as ``HEIF``."""
_MIME_BY_FORMAT = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "HEIF": "image/heif"}
_HEIC_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx")
_AVIF_BRANDS = (b"avif", b"avis")
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "PSD"),
    (b"%PDF", "PDF"),
    (b"qoif", "QOI"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"<svg", "SVG"),
    (b"<?xml", "SVG"),
)
_BOMB_ERROR = re.compile(r"\((\d+) pixels\) exceeds limit of (\d+) pixels")
_BASE64_ONLY = re.compile(r"^[A-Za-z0-9+/=\s]+$")


def _sniff_unsupported(data: bytes) -> str | None:
    """Name a well-known format that limner refuses, so the error can say what was sent."""
    head = data[:32]
    if head[4:8] == b"ftyp" and head[8:12] in _AVIF_BRANDS:
        return "AVIF"
    stripped = head.lstrip()
    return next((name for magic, name in _SIGNATURES if stripped.startswith(magic)), None)


def _mime_type(image: Image.Image, data: bytes) -> str:
    if image.format == "HEIF" and data[4:8] == b"ftyp" and data[8:12] in _HEIC_BRANDS:
        return "image/heic"
    return _MIME_BY_FORMAT.get(image.format or "", "application/octet-stream")


class ImageDecoder:
    """Decodes untrusted bytes into an RGB or RGBA ``SourceImage`` with EXIF orientation applied.

    Accepts PNG, JPEG, WebP, HEIC and HEIF; animated files yield their first frame. Pillow's own
    global bomb limit (``Image.MAX_IMAGE_PIXELS``) still applies when it is lower than ``max_pixels``.
    """

    def __init__(
        self,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_aspect_ratio: float | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.max_aspect_ratio = max_aspect_ratio
        """None: any shape (a provider's answer); set for client inputs, which engines pad or stretch."""

    def decode(self, data: bytes, label: str, param: str | None = None, keep_pixels: int | None = None) -> SourceImage:
        """Decode ``data``; ``label`` names it in errors and ``param`` is set on them. With ``keep_pixels``
        the image comes back shrunk to at most that many pixels (``SourceImage.original_size`` is as sent)."""

        def invalid(reason: str) -> InvalidImage:
            return InvalidImage(f"{label}: {reason}", param=param)

        if not data:
            raise invalid("empty file")
        if len(data) > self.max_bytes:
            raise invalid(f"{len(data)} bytes exceeds the {self.max_bytes}-byte limit")
        try:
            opened = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise invalid(self._bomb_reason(exc)) from exc
        except Exception as exc:  # Pillow raises many types for hostile input; all mean the same here
            unsupported = _sniff_unsupported(data)
            if unsupported is not None:
                raise invalid(f"unsupported format {unsupported}; use PNG, JPEG, WebP, HEIC or HEIF") from exc
            raise invalid("not a valid image file (could not decode)") from exc
        with opened:
            width, height = opened.size
            if width * height > self.max_pixels:
                raise invalid(f"{width}x{height} pixels exceeds the {self.max_pixels}-pixel limit")
            ratio = max(width, height) / max(1, min(width, height))
            if self.max_aspect_ratio is not None and ratio > self.max_aspect_ratio:
                raise invalid(
                    f"{width}x{height} has an aspect ratio of {ratio:.1f}:1; "
                    f"at most {self.max_aspect_ratio:g}:1 is accepted"
                )
            if keep_pixels is not None and opened.format == "JPEG":
                opened.draft(opened.mode, shrunk_size((width, height), keep_pixels))  # decode at 1/2, 1/4 or 1/8
            try:
                opened.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise invalid(self._bomb_reason(exc)) from exc
            except Exception as exc:
                raise invalid("image data is truncated or corrupt (could not decode)") from exc
            mime_type = _mime_type(opened, data)
            kept = shrink(opened, keep_pixels) if keep_pixels is not None else opened
            image = _upright(kept)
        mode = "RGBA" if has_alpha(image) else "RGB"
        if image.mode != mode:
            try:
                image = image.convert(mode)
            except Exception as exc:
                raise invalid(f"cannot convert {image.mode} pixels to {mode}") from exc
        turned = image.size != kept.size  # EXIF said the picture stands on its side
        original = (height, width) if turned else (width, height)
        return SourceImage(image=image, label=label, mime_type=mime_type, original_size=original, data=data)

    def _bomb_reason(self, exc: Exception) -> str:
        match = _BOMB_ERROR.search(str(exc))
        if match is None:
            return f"image dimensions exceed the {self.max_pixels}-pixel limit"
        pixels, pillow_limit = int(match.group(1)), int(match.group(2))
        return f"{pixels} pixels exceeds the {min(self.max_pixels, pillow_limit)}-pixel limit"


def _upright(image: Image.Image) -> Image.Image:
    """Apply EXIF orientation; a malformed EXIF block is ignored rather than failing the request."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:
        return image.copy()


def decode_base64(value: str | bytes, label: str, param: str | None = None) -> bytes:
    """Standard or URL-safe base64, tolerating whitespace (line breaks) and missing ``=`` padding."""
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    compact = "".join(text.split())
    if "-" in compact or "_" in compact:
        compact = compact.replace("-", "+").replace("_", "/")
    compact = compact.rstrip("=")
    if len(compact) % 4 == 1:
        raise InvalidImage(f"{label}: not valid base64 data (bad length)", param=param)
    try:
        data = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage(f"{label}: not valid base64 data", param=param) from None
    if not data:
        raise InvalidImage(f"{label}: empty file", param=param)
    return data


def parse_data_url(value: str, label: str = "image", param: str | None = None) -> tuple[str | None, bytes]:
    """``data:[<mime>][;base64],<data>`` → (declared MIME type or None, bytes).

    The declared type is informational only: the decoder trusts the bytes, not the label on them.
    """
    if not value[:5].lower() == "data:" or "," not in value:
        raise InvalidImage(f"{label}: not a valid data URL", param=param)
    header, payload = value[5:].split(",", 1)
    parts = [part.strip() for part in header.split(";")]
    mime_type = parts[0].lower() or None
    if any(part.lower() == "base64" for part in parts[1:]):
        return mime_type, decode_base64(payload, label, param)
    data = unquote_to_bytes(payload)
    if not data:
        raise InvalidImage(f"{label}: empty file", param=param)
    return mime_type, data


LocalMedia = Callable[[str], Awaitable[bytes | None]]
"""Returns the bytes behind one of limner's own media URLs (absolute or ``/media/...``), else None."""


class ImageLoader:
    """Resolves whatever a client sent as an image (bytes, data URL, base64, URL) to a ``SourceImage``.

    URLs that point at limner's own media are answered by ``local_media`` and never fetched; it may
    raise ``InvalidImage`` itself (for example for an expired signature).
    """

    def __init__(
        self,
        decoder: ImageDecoder,
        fetcher: ImageFetcher,
        local_media: LocalMedia | None = None,
        decode_concurrency: int = DEFAULT_DECODE_CONCURRENCY,
    ) -> None:
        self.decoder = decoder
        self.fetcher = fetcher
        self.local_media = local_media
        # Decoding a large image takes long enough to stall every other request, so it runs in a thread;
        # in a pool of its own, so at most this many full-size images are in memory while they decode.
        self._decoding = ThreadPoolExecutor(max(1, decode_concurrency), thread_name_prefix="limner-decode")

    async def load(
        self,
        value: str | bytes | bytearray | memoryview,
        label: str,
        param: str | None = None,
        keep_pixels: int | None = None,
    ) -> SourceImage:
        """``value`` decoded; with ``keep_pixels``, shrunk to at most that many pixels as it decodes."""
        data = await self._bytes(value, label, param)
        decode = functools.partial(self.decoder.decode, data, label, param, keep_pixels)
        return await asyncio.get_running_loop().run_in_executor(self._decoding, decode)

    async def aclose(self) -> None:
        await self.fetcher.aclose()

    async def _bytes(self, value: str | bytes | bytearray | memoryview, label: str, param: str | None) -> bytes:
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value)
        text = value.strip()
        if not text:
            raise InvalidImage(f"{label}: empty file", param=param)
        lowered = text[:8].lower()
        if lowered.startswith("data:"):
            return parse_data_url(text, label, param)[1]
        # Of the accepted formats only JPEG (FF D8 FF) encodes to base64 starting with "/": "/9j/".
        is_path = text.startswith("/") and not (text.startswith("/9j/") and _BASE64_ONLY.match(text))
        if lowered.startswith(("http://", "https://")) or is_path:
            if self.local_media is not None:
                local = await self.local_media(text)
                if local is not None:
                    return local
            if is_path:
                raise InvalidImage(f"{label}: {safe_url(text)} is not a media URL of this server", param=param)
            return await self.fetcher.fetch(text, label, param=param)
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
            scheme = text.split(":", 1)[0]
            raise InvalidImage(f"{label}: unsupported URL scheme {scheme!r}; use http or https", param=param)
        return decode_base64(text, label, param)
