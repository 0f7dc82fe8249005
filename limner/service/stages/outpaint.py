"""The outpaint stage: an edit's image on a larger canvas, the new area painted by the model's inpainting.

``expand`` grows the canvas by pixels on each side, or to an aspect ratio (evenly on the two sides that
grow). The canvas starts as the image with its edge pixels stretched outwards (a better start for the
model than a flat colour), with a mask that repaints only the new area; the model inpaints it at full
strength, at its own generation size for the canvas's shape, and the result, scaled to the canvas, gets
the image's own pixels pasted back: they leave as they came, only encoded again.

The mask speaks both conventions: white where to paint for local models (diffusers' and the built-in's),
transparent where to paint for providers that read OpenAI's."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from limner.core.errors import InvalidRequest, UnsupportedOperation
from limner.core.models import Capabilities, Expand, GeneratedImage, ImageRequest, Mode
from limner.core.sizes import fit_to_size, parse_aspect_ratio

MAX_MARGIN = 4096
"""The most pixels ``expand`` may add on one side."""


def check_expand(request: ImageRequest, caps: Capabilities) -> None:
    """What the plan stage can refuse of an ``expand`` before anything is decoded."""
    expand = request.expand
    if expand is None:
        return
    if request.mode is not Mode.EDIT:
        raise InvalidRequest("expand takes exactly one image (an edit).", param="expand")
    if request.mask is not None:
        raise InvalidRequest("expand makes its own mask (the new area); omit mask.", param="expand")
    if request.size.width is not None or request.size.aspect_ratio or request.size.resolution:
        raise InvalidRequest("With expand the result is the grown canvas; omit size.", param="size")
    if not caps.supports_mask or Mode.EDIT not in caps.modes:
        raise UnsupportedOperation(
            f"Model '{request.model}' cannot outpaint (it has no inpainting); omit expand.", param="expand"
        )
    sides = (expand.left, expand.right, expand.top, expand.bottom)
    if expand.aspect_ratio is not None:
        if any(sides):
            raise InvalidRequest("expand takes either pixels per side or aspect_ratio, not both.", param="expand")
        parse_aspect_ratio(expand.aspect_ratio, param="expand.aspect_ratio")
    elif not any(sides):
        raise InvalidRequest("expand must add pixels on at least one side, or name an aspect_ratio.", param="expand")
    if any(side < 0 or side > MAX_MARGIN for side in sides):
        raise InvalidRequest(f"expand adds 0 to {MAX_MARGIN} pixels on a side.", param="expand")


def margins(expand: Expand, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) pixels to add around an image of ``size``."""
    if expand.aspect_ratio is None:
        return expand.left, expand.top, expand.right, expand.bottom
    width, height = size
    ratio = parse_aspect_ratio(expand.aspect_ratio, param="expand.aspect_ratio")
    if ratio >= width / height:
        grow = max(0, round(height * ratio) - width)
        return grow // 2, 0, grow - grow // 2, 0
    grow = max(0, round(width / ratio) - height)
    return 0, grow // 2, 0, grow - grow // 2


@dataclass(frozen=True)
class Canvas:
    """The grown canvas, its mask, and where the original sits on it."""

    image: Image.Image
    mask: Image.Image
    original: Image.Image
    offset: tuple[int, int]

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def make_canvas(expand: Expand, source: Image.Image, caps: Capabilities) -> Canvas:
    """``source`` on its grown canvas, edges stretched outwards, with the mask of the new area."""
    left, top, right, bottom = margins(expand, source.size)
    width, height = source.width + left + right, source.height + top + bottom
    if width * height > caps.max_pixels or max(width, height) > caps.max_side:
        raise InvalidRequest(
            f"Expanded, the image would be {width}x{height}; this model makes at most {caps.max_side} pixels a side "
            f"and {caps.max_pixels} in all.",
            param="expand",
        )
    if (width, height) == source.size:
        raise InvalidRequest(f"The image already has aspect ratio {expand.aspect_ratio}.", param="expand")
    mode = "RGBA" if source.mode in ("RGBA", "LA", "PA") or "transparency" in source.info else "RGB"
    original = source.convert(mode)
    pixels = np.asarray(original)
    padded = np.pad(pixels, ((top, bottom), (left, right), (0, 0)), mode="edge")
    mask = Image.new("RGBA", (width, height), (255, 255, 255, 0))  # paint here: white, and transparent
    mask.paste((0, 0, 0, 255), (left, top, left + source.width, top + source.height))  # keep: black, opaque
    return Canvas(Image.fromarray(padded, mode), mask, original, (left, top))


def restore(generated: list[GeneratedImage], canvas: Canvas) -> list[GeneratedImage]:
    """Each painted canvas at the canvas's size, the original's own pixels pasted back where they were."""
    done = []
    for item in generated:
        image = fit_to_size(item.image, *canvas.size)
        image = image.convert(canvas.original.mode) if image.mode != canvas.original.mode else image.copy()
        image.paste(canvas.original, canvas.offset)
        done.append(replace(item, image=image, source_url=None))
    return done
