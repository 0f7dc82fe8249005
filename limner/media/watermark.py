"""An optional invisible watermark: a short fixed payload hidden in the pixels with the ``invisible-watermark``
package (the DWT-DCT mark Stable Diffusion XL ships), for operators who want a mark that needs no metadata.

Unlike Content Credentials it names nobody and proves nothing: it says "this came from a limner that marks
its images" to anyone who knows the payload, and it survives only mild changes. Measured on a 1024x1200
photograph (``tests/media/test_watermark.py`` checks the lossless and limner-JPEG rows):

- ``dwtDct`` (the default, as SDXL ships it; about 0.25 s a 1024x1024 image here): survives PNG, limner's
  own JPEG (quality 90 with full-resolution colour, which limner uses while the mark is on) and mostly
  WebP; destroyed by a JPEG re-encode with the usual 4:2:0 colour subsampling at any quality, by a 0.5x
  resize, by a crop of a few pixels, by rotation.
- ``dwtDctSvd`` (about 5x slower): also survives a 4:2:0 JPEG re-encode at quality 75; still destroyed by a
  resize, a crop or a rotation.

Images under 256x256 pixels (the library's minimum) are left unmarked, and so are the partial images a
stream shows before the final one. The payload is 1 to 16 bytes; fewer bits are repeated more often and
survive better.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

Method = Literal["dwtDct", "dwtDctSvd"]
METHODS: tuple[Method, ...] = ("dwtDct", "dwtDctSvd")
MIN_PIXELS = 256 * 256
"""The library refuses smaller images (rows x columns)."""
MAX_PAYLOAD_BYTES = 16
FOUND_SHARE = 0.85
"""Share of the payload's bits that must read back for "found": an unmarked image reads about half of them
(a mark destroyed by 4:2:0 JPEG reads as many as an unmarked image), a surviving mark nearly all."""


class WatermarkError(ValueError):
    """The watermark cannot be set up as configured; the message says what to change."""


@dataclass(frozen=True)
class Detection:
    """What reading an image for the payload found."""

    method: str
    payload: str
    bits: int
    matching: int
    """Bits that read back as the payload's; 0 when the image was too small to read."""
    readable: bool = True
    """False: the image is under the library's 256x256 minimum, so it cannot carry the mark."""

    @property
    def found(self) -> bool:
        return self.readable and self.matching >= math.ceil(self.bits * FOUND_SHARE)


class InvisibleWatermark:
    """Marks and reads images with one payload and method; safe to share between threads (each call makes its
    own encoder)."""

    def __init__(self, payload: str = "limner", method: Method = "dwtDct") -> None:
        self.payload = payload
        self.method: Method = method
        self._bits = payload_bits(payload)
        if method not in METHODS:
            raise WatermarkError(f"unknown invisible watermark method {method!r}; use one of {', '.join(METHODS)}")
        try:
            import imwatermark
        except ImportError as exc:  # the package, or a system library opencv loads (libGL: make setup)
            raise WatermarkError(
                f"the invisible watermark needs the invisible-watermark package: pip install 'limner[watermark]' "
                f"({exc})"
            ) from None
        self._library: Any = imwatermark

    def apply(self, image: Image.Image) -> Image.Image:
        """``image`` with the payload hidden in it (alpha kept); the same object when it is too small to carry it."""
        if image.width * image.height < MIN_PIXELS:
            return image
        alpha = image.getchannel("A") if image.mode in ("RGBA", "LA") else None
        encoder = self._library.WatermarkEncoder()
        encoder.set_watermark("bits", self._bits)
        marked = encoder.encode(_bgr(image), self.method)
        result = Image.fromarray(np.ascontiguousarray(marked[:, :, ::-1]), "RGB")
        if alpha is not None:
            result.putalpha(alpha)
        return result

    def detect(self, image: Image.Image) -> Detection:
        """How many of the payload's bits ``image`` carries."""
        bits = len(self._bits)
        if image.width * image.height < MIN_PIXELS:
            return Detection(self.method, self.payload, bits, 0, readable=False)
        decoder = self._library.WatermarkDecoder("bits", bits)
        read = decoder.decode(_bgr(image), self.method)
        matching = sum(int(bool(got)) == want for got, want in zip(read, self._bits, strict=True))
        return Detection(self.method, self.payload, bits, matching)


def payload_bits(payload: str) -> list[int]:
    """The payload's UTF-8 bits; ``WatermarkError`` when empty or longer than ``MAX_PAYLOAD_BYTES``."""
    data = payload.encode()
    if not 1 <= len(data) <= MAX_PAYLOAD_BYTES:
        raise WatermarkError(
            f"the invisible watermark payload must be 1 to {MAX_PAYLOAD_BYTES} bytes of UTF-8, "
            f"not {len(data)} ({payload!r})"
        )
    return [int(bit) for bit in np.unpackbits(np.frombuffer(data, dtype=np.uint8))]


def _bgr(image: Image.Image) -> Any:
    """8-bit BGR rows, as the library reads images (``cv2.imread``); a float array would shift its colour
    offsets and make a mark that the library's usual 8-bit reading cannot find."""
    rgb = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    return np.ascontiguousarray(rgb[:, :, ::-1])


def describe(detection: Detection) -> str:
    """One line for ``limner provenance check``."""
    if not detection.readable:
        return "invisible watermark: not readable (the image is under 256x256 pixels)"
    share = f"{detection.matching} of {detection.bits} bits of {detection.payload!r}"
    if detection.found:
        return f"invisible watermark: found ({detection.method}, {share})"
    return f"invisible watermark: not found ({detection.method}, {share}; an unmarked image matches about half)"
