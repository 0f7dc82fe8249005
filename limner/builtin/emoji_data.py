"""Training material for the first-generation emoji model: Noto Color Emoji glyphs rendered to small RGB images.

The font is Debian's ``fonts-noto-color-emoji`` (SIL Open Font License 1.1, see ``LICENSES.md``).
Only pictographic emoji are kept (faces, animals, food, plants, hearts, weather, vehicles, objects
that read as pictures): keycaps, arrows, clocks, flags and enclosed letters are text, not pictures,
and a model this small spends its capacity better on fewer, clearer subjects.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_PATHS = (
    Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"),
    Path("/usr/share/fonts/noto/NotoColorEmoji.ttf"),
)
FONT_SIZE = 109  # the only size at which the font's colour bitmaps are exposed

# Inclusive code point ranges of pictographic emoji (see module docstring for what is left out).
PICTOGRAPHIC_RANGES: tuple[tuple[int, int], ...] = (
    (0x1F300, 0x1F320),  # sky and weather: cyclone, rainbow, moon phases, sun, star
    (0x1F324, 0x1F37F),  # weather, food, drinks, plants
    (0x1F380, 0x1F384),  # ribbon, gift, cake, jack-o-lantern, christmas tree
    (0x1F400, 0x1F43E),  # animals
    (0x1F493, 0x1F49F),  # hearts
    (0x1F5A4, 0x1F5A4),  # black heart
    (0x1F600, 0x1F644),  # faces
    (0x1F680, 0x1F6A4),  # vehicles
    (0x1F6F4, 0x1F6FC),  # scooters, boats, planes
    (0x1F90D, 0x1F90E),  # white and brown hearts
    (0x1F910, 0x1F92F),  # faces
    (0x1F950, 0x1F97A),  # food, faces
    (0x1F980, 0x1F9AE),  # animals
    (0x1F9C0, 0x1F9CB),  # cheese, drinks
    (0x1F9E1, 0x1F9E1),  # orange heart
    (0x1FA75, 0x1FA77),  # light blue, grey and pink hearts
    (0x1FAB0, 0x1FABF),  # newer animals and plants
    (0x1FAD0, 0x1FADB),  # newer food
    (0x2600, 0x2603),  # sun, cloud, umbrella, snowman
    (0x2614, 0x2615),  # umbrella with rain, hot beverage
    (0x26A1, 0x26A1),  # high voltage
    (0x26C4, 0x26C5),  # snowman, sun behind cloud
    (0x2708, 0x2708),  # airplane
    (0x2744, 0x2744),  # snowflake
    (0x2764, 0x2764),  # red heart
    (0x2B50, 0x2B50),  # star
)

# Names that are pictographic by range but symbols in practice.
EXCLUDED_NAME_WORDS = (
    "SKIN TONE",
    "BUTTON",
    "SIGN",
    "SYMBOL",
    "ARROW",
    "CLOCK",
    "KEYCAP",
    "REGIONAL",
    "SQUARED",
    "CIRCLED",
    "INPUT",
    "LATIN",
    "DIGIT",
    "PLACEHOLDER",
    "HAND",
    "FINGER",
    "PERSON",
    "WOMAN",
    "MAN ",
    "SIGNAL",
)


@dataclass(frozen=True)
class EmojiSample:
    """One training image and the captions that describe it."""

    codepoint: int
    name: str
    captions: tuple[str, ...]
    image: Image.Image


def find_font() -> Path:
    """The installed Noto Color Emoji font, or an error that says how to install it."""
    for path in FONT_PATHS:
        if path.exists():
            return path
    raise FileNotFoundError(
        "Noto Color Emoji not found; install Debian's fonts-noto-color-emoji (apt-get install fonts-noto-color-emoji)"
    )


def caption_variants(name: str) -> tuple[str, ...]:
    """The Unicode name in a few phrasings, so short prompts and sentences both land near it."""
    article = "an" if name[:1] in "aeiou" else "a"
    return (
        name,
        f"{article} {name}",
        f"{name} emoji",
        f"an emoji of {article} {name}",
        f"a picture of {article} {name}",
    )


def candidate_codepoints() -> Iterator[int]:
    for first, last in PICTOGRAPHIC_RANGES:
        yield from range(first, last + 1)


def emoji_name(codepoint: int) -> str | None:
    name = unicodedata.name(chr(codepoint), "")
    if not name or any(word in name for word in EXCLUDED_NAME_WORDS):
        return None
    return name.lower()


def render_glyph(text: str, font: ImageFont.FreeTypeFont, size: int) -> Image.Image | None:
    """Render ``text`` on white, centred in a square, resized to ``size``; None if the font lacks it."""
    canvas = Image.new("RGBA", (160, 160), (255, 255, 255, 0))
    ImageDraw.Draw(canvas).text((12, 12), text, font=font, embedded_color=True)
    box = canvas.getbbox()
    if box is None:
        return None
    glyph = canvas.crop(box)
    side = max(glyph.size)
    square = Image.new("RGBA", (side, side), (255, 255, 255, 0))
    square.paste(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    white = Image.new("RGBA", square.size, (255, 255, 255, 255))
    flat = Image.alpha_composite(white, square).convert("RGB")
    # A glyph that is nearly blank or a box outline is a missing glyph, not a picture.
    if np.asarray(flat).std() < 8:
        return None
    return flat.resize((size, size), Image.Resampling.LANCZOS)


def load_emoji(size: int = 32) -> list[EmojiSample]:
    """All curated emoji rendered at ``size`` pixels, in code point order (deterministic)."""
    font = ImageFont.truetype(str(find_font()), FONT_SIZE)
    samples: list[EmojiSample] = []
    for codepoint in candidate_codepoints():
        name = emoji_name(codepoint)
        if name is None:
            continue
        image = render_glyph(chr(codepoint) + "\ufe0f", font, size)
        if image is None:
            continue
        samples.append(EmojiSample(codepoint, name, caption_variants(name), image))
    return samples
