"""Where a PNG, JPEG or WebP file keeps its C2PA manifest store, how many bytes it takes, and the file without
it: PNG ``caBX`` chunks, JPEG APP11 (JUMBF) segments, WebP ``C2PA`` chunks, as the C2PA specification places
them. The C2PA library reads a store whole (and copies it into every manifest that takes the file as an
ingredient), so limner looks at its size first, without parsing it, walking only the file's chunk headers.

A file that is not what its first bytes say, or whose structure ends early, is taken as it is: size 0,
nothing stripped (the decoder refuses it elsewhere).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_APP11 = 0xEB
JPEG_SOS = 0xDA
JPEG_STANDALONE = {0x01, *range(0xD0, 0xD9)}
"""Markers without a length: TEM, RST0-7, SOI."""


def store_size(data: bytes, mime_type: str) -> int:
    """Bytes the file's C2PA manifest store takes (0: none)."""
    return sum(end - start for start, end in _store_spans(data, mime_type))


def without_store(data: bytes, mime_type: str) -> bytes:
    """The file with its C2PA manifest store cut out, every other byte kept (a WebP's RIFF size fixed)."""
    spans = list(_store_spans(data, mime_type))
    if not spans:
        return data
    kept, position = bytearray(), 0
    for start, end in spans:
        kept += data[position:start]
        position = end
    kept += data[position:]
    if mime_type == "image/webp":
        kept[4:8] = struct.pack("<I", len(kept) - 8)
    return bytes(kept)


def _store_spans(data: bytes, mime_type: str) -> Iterator[tuple[int, int]]:
    if mime_type == "image/png":
        return _png(data)
    if mime_type == "image/jpeg":
        return _jpeg(data)
    if mime_type == "image/webp":
        return _webp(data)
    return iter(())


def _png(data: bytes) -> Iterator[tuple[int, int]]:
    """``caBX`` chunks: length (4), type (4), data, CRC (4)."""
    if not data.startswith(PNG_SIGNATURE):
        return
    position = len(PNG_SIGNATURE)
    while position + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, position)
        kind = data[position + 4 : position + 8]
        end = position + 12 + length
        if end > len(data):
            return
        if kind == b"caBX":
            yield position, end
        if kind == b"IEND":
            return
        position = end


def _jpeg(data: bytes) -> Iterator[tuple[int, int]]:
    """APP11 segments carrying JUMBF (``JP`` after the length), up to the first scan."""
    if not data.startswith(b"\xff\xd8"):
        return
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in JPEG_STANDALONE:
            position += 2
            continue
        if marker == JPEG_SOS:
            return
        (length,) = struct.unpack_from(">H", data, position + 2)
        end = position + 2 + length
        if length < 2 or end > len(data):
            return
        if marker == JPEG_APP11 and data[position + 4 : position + 6] == b"JP":
            yield position, end
        position = end


def _webp(data: bytes) -> Iterator[tuple[int, int]]:
    """``C2PA`` chunks: FourCC (4), size (4, little-endian), data padded to an even length."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return
    position = 12
    while position + 8 <= len(data):
        kind = data[position : position + 4]
        (size,) = struct.unpack_from("<I", data, position + 4)
        end = position + 8 + size + (size & 1)
        if end > len(data) + (size & 1):
            return
        if kind == b"C2PA":
            yield position, min(end, len(data))
        position = end
