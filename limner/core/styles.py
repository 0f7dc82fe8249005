"""Style presets: named, documented prompt transformations, plus an optional pixel post-process.

Every preset rewrites the prompt (and adds negative terms) for engines that understand style words.
Models too small to follow style words (the built-in emoji model) opt into ``postprocess``: a visible
image filter that stands in for the style, applied to every image of the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from limner.core.errors import InvalidRequest

PostProcess = Callable[[Image.Image], Image.Image]


@dataclass(frozen=True)
class StylePreset:
    id: str
    description: str
    template: str = "{prompt}"
    negative: str = ""
    postprocess: PostProcess | None = None

    def apply(self, prompt: str, negative: str | None) -> tuple[str, str | None]:
        styled = self.template.format(prompt=prompt)
        if not self.negative:
            return styled, negative
        return styled, f"{negative}, {self.negative}" if negative else self.negative


def postprocessed(image: Image.Image, process: PostProcess) -> Image.Image:
    """``process`` applied to ``image`` as seen on white, its transparency kept: the filters work on colours, and
    the transparent parts of an RGBA image (the built-in model's background) would otherwise turn black."""
    if image.mode != "RGBA":
        return process(image)
    alpha = image.getchannel("A")
    flat = Image.new("RGB", image.size, (255, 255, 255))
    flat.paste(image, mask=alpha)
    styled = process(flat).convert("RGBA")
    styled.putalpha(alpha)
    return styled


def _line_art(image: Image.Image) -> Image.Image:
    edges = image.convert("L").filter(ImageFilter.FIND_EDGES)
    return ImageOps.invert(ImageOps.autocontrast(edges)).convert("RGB")


def _posterize(image: Image.Image, bits: int) -> Image.Image:
    return ImageOps.posterize(image.convert("RGB"), bits)


def _low_poly(image: Image.Image) -> Image.Image:
    small = image.convert("RGB").resize((max(1, image.width // 8), max(1, image.height // 8)), Image.Resampling.BOX)
    return _posterize(small.resize(image.size, Image.Resampling.NEAREST), 3)


def _neon(image: Image.Image) -> Image.Image:
    rgb = image.convert("RGB")
    glow = ImageOps.invert(rgb).filter(ImageFilter.GaussianBlur(1))
    return ImageEnhance.Color(ImageOps.autocontrast(glow)).enhance(2.5)


def _analog(image: Image.Image) -> Image.Image:
    rgb = image.convert("RGB")
    sepia = ImageOps.colorize(rgb.convert("L"), black=(40, 26, 13), white=(255, 240, 200))
    return Image.blend(rgb, sepia, 0.5)


def _comic(image: Image.Image) -> Image.Image:
    rgb = image.convert("RGB")
    edges = rgb.convert("L").filter(ImageFilter.FIND_EDGES).point(lambda v: 0 if v > 60 else 255)
    flat = _posterize(ImageEnhance.Color(rgb).enhance(1.6), 3)
    return Image.composite(flat, Image.new("RGB", rgb.size, (0, 0, 0)), edges.convert("L"))


def _vivid(image: Image.Image) -> Image.Image:
    return ImageEnhance.Contrast(ImageEnhance.Color(image.convert("RGB")).enhance(1.5)).enhance(1.15)


def _cinematic(image: Image.Image) -> Image.Image:
    rgb = ImageEnhance.Contrast(image.convert("RGB")).enhance(1.3)
    teal = Image.new("RGB", rgb.size, (0, 60, 80))
    return Image.blend(rgb, teal, 0.15)


PRESETS: dict[str, StylePreset] = {
    preset.id: preset
    for preset in (
        StylePreset("none", "No style modification."),
        StylePreset(
            "photographic",
            "Realistic lighting and details.",
            "{prompt}, professional photograph, natural lighting, sharp focus, highly detailed",
            "illustration, painting, drawing, cartoon",
            _vivid,
        ),
        StylePreset(
            "digital-art",
            "Vibrant colours, modern aesthetics.",
            "{prompt}, digital art, vibrant colors, modern illustration, highly detailed",
            "photo, grainy",
            _vivid,
        ),
        StylePreset(
            "comic-book",
            "Bold lines, dramatic shading.",
            "{prompt}, comic book art, bold ink lines, dramatic shading, halftone",
            "photo, realistic",
            _comic,
        ),
        StylePreset(
            "fantasy-art",
            "Magical and ethereal elements.",
            "{prompt}, fantasy art, magical, ethereal glow, epic, intricate",
            "photo, mundane",
            _vivid,
        ),
        StylePreset(
            "analog-film",
            "Film grain and vintage tones.",
            "{prompt}, analog film photo, film grain, vintage tones, faded colors",
            "digital, oversaturated",
            _analog,
        ),
        StylePreset(
            "neon-punk",
            "Cyberpunk style with neon colours.",
            "{prompt}, neon punk, cyberpunk, glowing neon lights, dark background, vivid magenta and cyan",
            "daylight, muted colors",
            _neon,
        ),
        StylePreset(
            "isometric",
            "Isometric perspective.",
            "{prompt}, isometric view, 3d isometric illustration, clean geometry",
            "perspective distortion",
        ),
        StylePreset(
            "low-poly",
            "Low-poly 3D style.",
            "{prompt}, low poly 3d render, faceted polygons, flat shading",
            "smooth, photo",
            _low_poly,
        ),
        StylePreset(
            "origami",
            "Paper-folding style.",
            "{prompt}, origami, folded paper craft, paper texture, crisp creases",
            "photo, smooth plastic",
            lambda image: _posterize(image, 2),
        ),
        StylePreset(
            "line-art",
            "Clean line art with minimal shading.",
            "{prompt}, clean line art, black ink outlines on white, minimal shading",
            "color, shading, gradient",
            _line_art,
        ),
        StylePreset(
            "cinematic",
            "Dramatic lighting and composition.",
            "{prompt}, cinematic still, dramatic lighting, film composition, depth of field",
            "flat lighting",
            _cinematic,
        ),
        StylePreset(
            "3d-model",
            "High-quality 3D rendered appearance.",
            "{prompt}, 3d model render, octane render, soft studio lighting, high detail",
            "flat, 2d, sketch",
            lambda image: ImageEnhance.Contrast(image.convert("RGB")).enhance(1.25),
        ),
    )
}


def get_style(name: str | None, *, param: str = "style") -> StylePreset:
    if name is None or name == "":
        return PRESETS["none"]
    try:
        return PRESETS[name]
    except KeyError:
        raise InvalidRequest(
            f"Unknown style preset '{name}'. Available presets: {', '.join(PRESETS)}.", param=param
        ) from None
