"""From what a client asked for (``WxH``, ``auto``, ``16:9``, ``2K``) to pixel sizes a model accepts.

Two sizes come out of one request: the *output* size the client gets, and the *generation* size the
engine runs at. They differ only when the engine has a native size (the built-in model generates
32x32 and limner scales, see ``fit_to_size``) or when an explicit size is not a multiple the model
needs (generation snaps down to the multiple, the output is resized to exactly what was asked).
Explicit sizes outside what a model accepts are errors that say what it accepts; aspect ratios and
resolution presets are scaled to fit, because they never promised exact pixels.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from PIL import Image

from limner.core.errors import InvalidRequest
from limner.core.models import Capabilities, SizeSpec

RESOLUTION_AREAS = {"0.5K": 512 * 512, "1K": 1024 * 1024, "2K": 2048 * 2048, "4K": 4096 * 4096}
"""A resolution preset fixes the pixel area; the aspect ratio then fixes the shape."""

MAX_OUTPUT_SIDE = 4096
MAX_OUTPUT_PIXELS = 4096 * 4096
INPUT_AREA_FACTOR = 4
"""An input keeps at most this many times the generation area: enough for any engine to fit it to the
generation size (padding or stretching up to 4:1) without losing detail it could have used."""
MIN_INPUT_PIXELS = 512 * 512
"""...and never fewer than this, so inputs of a small native-size model stay usable after it."""

_SIZE = re.compile(r"^\s*(\d{1,5})\s*[xX\u00d7]\s*(\d{1,5})\s*$")
_RATIO = re.compile(r"^\s*(\d{1,3})\s*:\s*(\d{1,3})\s*$")


@dataclass(frozen=True)
class SizePlan:
    output: tuple[int, int]
    generate: tuple[int, int]


def parse_size(value: str, *, param: str = "size") -> tuple[int, int] | None:
    """``"1024x768"`` -> (1024, 768); ``"auto"`` -> None; anything else is an error."""
    if value.strip().lower() == "auto":
        return None
    match = _SIZE.match(value)
    if not match:
        raise InvalidRequest(f"Invalid size '{value}': expected WIDTHxHEIGHT (e.g. 1024x1024) or 'auto'.", param=param)
    width, height = int(match[1]), int(match[2])
    if width <= 0 or height <= 0:
        raise InvalidRequest(f"Invalid size '{value}': width and height must be positive.", param=param)
    return width, height


def parse_aspect_ratio(value: str, *, param: str = "aspect_ratio") -> float:
    match = _RATIO.match(value)
    if not match or int(match[1]) == 0 or int(match[2]) == 0:
        raise InvalidRequest(f"Invalid aspect ratio '{value}': expected W:H such as 16:9.", param=param)
    return int(match[1]) / int(match[2])


def shape_for(ratio: float, area: int, multiple: int) -> tuple[int, int]:
    """The ``multiple``-aligned width and height closest to ``area`` pixels at ``ratio``."""
    width = math.sqrt(area * ratio)
    height = width / ratio
    return _align(width, multiple), _align(height, multiple)


def _align(value: float, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)


def resolve_size(
    spec: SizeSpec, caps: Capabilities, *, first_image: Image.Image | None = None, param: str = "size"
) -> SizePlan:
    """The output and generation sizes for ``spec`` on a model with ``caps``."""
    if spec.width is not None and spec.height is not None:
        output = _check_explicit(spec.width, spec.height, caps, param)
        return SizePlan(output, _generation_size(output, caps))

    ratio = _requested_ratio(spec, first_image, param)
    if ratio is None and spec.resolution is None:
        if first_image is not None:
            ratio = first_image.width / first_image.height
        else:
            return SizePlan(caps.default_size, _generation_size(caps.default_size, caps))
    ratio = ratio or 1.0
    area = RESOLUTION_AREAS.get((spec.resolution or "").upper(), caps.default_size[0] * caps.default_size[1])
    if caps.allowed_sizes:
        output = min(
            caps.allowed_sizes,
            key=lambda size: (
                round(abs(math.log(size[0] / size[1] / ratio)), 3),
                abs(math.log(size[0] * size[1] / area)),
            ),
        )
        return SizePlan(output, output)
    output = _fit(shape_for(ratio, area, 8 if caps.native_size else caps.size_multiple), caps)
    return SizePlan(output, _generation_size(output, caps))


def input_pixels(plan: SizePlan) -> int:
    """How many pixels of each input image a request with ``plan`` can use: larger inputs are shrunk to
    this as they are decoded, so their memory is bounded by the request, not by the upload's shape."""
    width, height = plan.generate
    return max(INPUT_AREA_FACTOR * width * height, MIN_INPUT_PIXELS)


def _requested_ratio(spec: SizeSpec, first_image: Image.Image | None, param: str) -> float | None:
    if spec.aspect_ratio is None:
        return None
    if spec.aspect_ratio.strip().lower() == "auto":
        return first_image.width / first_image.height if first_image is not None else None
    return parse_aspect_ratio(spec.aspect_ratio, param=param)


def _output_limits(caps: Capabilities) -> tuple[int, int, int]:
    """(min side, max side, max pixels) for what the client receives."""
    if caps.native_size is not None:
        return 16, MAX_OUTPUT_SIDE, MAX_OUTPUT_PIXELS
    return caps.min_side, caps.max_side, caps.max_pixels


def _check_explicit(width: int, height: int, caps: Capabilities, param: str) -> tuple[int, int]:
    if caps.allowed_sizes and (width, height) not in caps.allowed_sizes:
        allowed = ", ".join(f"{w}x{h}" for w, h in caps.allowed_sizes)
        raise InvalidRequest(
            f"Size {width}x{height} is not supported by this model. Supported sizes: {allowed}.", param=param
        )
    low, high, pixels = _output_limits(caps)
    if min(width, height) < low or max(width, height) > high or width * height > pixels:
        raise InvalidRequest(
            f"Size {width}x{height} is not supported by this model: each side must be between {low} and {high} "
            f"pixels and the image at most {pixels} pixels.",
            param=param,
        )
    return width, height


def _fit(size: tuple[int, int], caps: Capabilities) -> tuple[int, int]:
    """Scale a preset-derived size into the model's limits, keeping its shape."""
    low, high, pixels = _output_limits(caps)
    multiple = 8 if caps.native_size else caps.size_multiple
    width, height = size
    scale = min(1.0, high / max(width, height), math.sqrt(pixels / (width * height)))
    scale = max(scale, low / min(width, height))
    if scale != 1.0:
        width, height = int(width * scale) // multiple * multiple, int(height * scale) // multiple * multiple
    return max(width, low), max(height, low)


def _generation_size(output: tuple[int, int], caps: Capabilities) -> tuple[int, int]:
    if caps.native_size is not None:
        return caps.native_size
    multiple = caps.size_multiple
    return max(multiple, output[0] // multiple * multiple), max(multiple, output[1] // multiple * multiple)


def fit_to_size(
    image: Image.Image, width: int, height: int, background: tuple[int, int, int] = (255, 255, 255)
) -> Image.Image:
    """Scale ``image`` to exactly ``width`` x ``height``.

    Rule: when the aspect ratios differ, the image is first padded (centred, with ``background``) to the
    target ratio, never cropped, so nothing the model drew is lost; it is then resized with Lanczos.
    """
    if image.size == (width, height):
        return image
    source_ratio = image.width / image.height
    target_ratio = width / height
    if abs(source_ratio - target_ratio) > 1e-3:
        if target_ratio > source_ratio:
            canvas_size = (round(image.height * target_ratio), image.height)
        else:
            canvas_size = (image.width, round(image.width / target_ratio))
        fill: tuple[int, ...] = (*background, 0) if image.mode == "RGBA" else background
        canvas = Image.new(image.mode, canvas_size, fill)
        canvas.paste(image, ((canvas_size[0] - image.width) // 2, (canvas_size[1] - image.height) // 2))
        image = canvas
    return image.resize((width, height), Image.Resampling.LANCZOS)
