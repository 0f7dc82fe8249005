"""Every emoji Noto Color Emoji draws, with the CLDR words that name it: the second model's training set.

The list and the words come from the ``emojibase-data`` npm package (MIT; its labels and tags are the Unicode
CLDR English annotations: the short name and the keywords), with more keywords from the ``emojilib`` npm package
(MIT; "padlock" for the lock, "cheeseburger" for the hamburger) where it is installed; both are installed at
training time by ``make train`` (never at run time: the trained model carries what it needs). Base forms only:
the skin-tone variants repeat their base emoji in another colour, and the components (skin-tone swatches, hair
styles) and lone regional-indicator letters are parts of other emoji, not pictures of their own.

Glyphs come from Debian's ``fonts-noto-color-emoji`` (SIL Open Font License 1.1, see ``LICENSES.md``), drawn at
the font's bitmap size (136 px), with their own transparency, centred on a square.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from limner.builtin.emoji_data import FONT_SIZE, find_font

EMOJIBASE_VERSION = "17.0.0"
EMOJIBASE_ENV = "LIMNER_EMOJIBASE_DIR"
"""Where ``emojibase-data`` is installed (its package directory); ``make train`` sets it."""
DEFAULT_EMOJIBASE_DIR = Path.home() / ".cache" / "limner" / "npm" / "node_modules" / "emojibase-data"
EMOJILIB_VERSION = "4.0.3"
EMOJILIB_ENV = "LIMNER_EMOJILIB_DIR"
"""Where ``emojilib`` is installed (its package directory): optional, more keywords when present."""
DEFAULT_EMOJILIB_DIR = DEFAULT_EMOJIBASE_DIR.parent / "emojilib"
SHORTCODE_SETS = ("cldr", "github", "iamcal", "emojibase")
SKIPPED_GROUPS = (2, None)
"""emojibase groups left out: 2 is the components, None the regional-indicator letters."""
GLYPH_SIDE = 136
CANVAS = 160


@dataclass(frozen=True)
class EmojiEntry:
    """One emoji: its characters, CLDR short name, CLDR keywords and shortcodes (as words)."""

    emoji: str
    hexcode: str
    label: str
    tags: tuple[str, ...]
    shortcodes: tuple[str, ...]
    group: int
    keywords: tuple[str, ...] = ()
    """emojilib's keywords not already among the CLDR words."""


def emojibase_dir() -> Path:
    path = Path(os.environ.get(EMOJIBASE_ENV, DEFAULT_EMOJIBASE_DIR)).expanduser()
    if not (path / "en" / "data.json").exists():
        raise FileNotFoundError(
            f"emojibase-data not found at {path}; install it with `make train-data` "
            f"(npm install --prefix ~/.cache/limner/npm emojibase-data@{EMOJIBASE_VERSION}) or set {EMOJIBASE_ENV}"
        )
    return path


def emojilib_keywords(root: Path | None = None) -> dict[str, list[str]]:
    """emojilib's keywords by emoji (variation selectors dropped), or nothing when it is not installed."""
    root = root or Path(os.environ.get(EMOJILIB_ENV, DEFAULT_EMOJILIB_DIR)).expanduser()
    path = root / "dist" / "emoji-en-US.json"
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {emoji.replace("\ufe0f", ""): [w.replace("_", " ").strip() for w in words] for emoji, words in data.items()}


def load_entries(root: Path | None = None, keywords: dict[str, list[str]] | None = None) -> list[EmojiEntry]:
    """All base-form emoji in emojibase order (deterministic), with their words."""
    root = root or emojibase_dir()
    keywords = keywords if keywords is not None else emojilib_keywords()
    data = json.loads((root / "en" / "data.json").read_text(encoding="utf-8"))
    shortcodes: dict[str, list[str]] = {}
    for name in SHORTCODE_SETS:
        path = root / "en" / "shortcodes" / f"{name}.json"
        if not path.exists():
            continue
        for hexcode, codes in json.loads(path.read_text(encoding="utf-8")).items():
            for code in [codes] if isinstance(codes, str) else codes:
                words = code.replace("_", " ").replace("-", " ").strip()
                if words and words not in shortcodes.setdefault(hexcode, []):
                    shortcodes[hexcode].append(words)
    entries = []
    for item in sorted(data, key=lambda item: item.get("order", 1 << 30)):
        if item.get("group") in SKIPPED_GROUPS:
            continue
        tags = tuple(item.get("tags", ()))
        codes = tuple(shortcodes.get(item["hexcode"], ()))
        known = {item["label"].lower(), *tags, *codes}
        extra = [w for w in keywords.get(item["emoji"].replace("\ufe0f", ""), []) if w and w.lower() not in known]
        entries.append(
            EmojiEntry(
                emoji=item["emoji"],
                hexcode=item["hexcode"],
                label=item["label"],
                tags=tags,
                shortcodes=codes,
                group=int(item["group"]),
                keywords=tuple(dict.fromkeys(extra)),
            )
        )
    return entries


def glyph_font() -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(find_font()), FONT_SIZE, layout_engine=ImageFont.Layout.RAQM)


def render_rgba(text: str, font: ImageFont.FreeTypeFont) -> Image.Image | None:
    """``text`` as the font draws it, centred on a transparent ``GLYPH_SIDE`` square; None if it is missing,
    or drawn as more than one glyph (a sequence the font has no ligature for)."""
    canvas = Image.new("RGBA", (CANVAS * 2, CANVAS), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((8, 8), text, font=font, embedded_color=True)
    box = canvas.getbbox()
    if box is None:
        return None
    glyph = canvas.crop(box)
    if max(glyph.size) > GLYPH_SIDE:  # two glyphs side by side: no ligature for this sequence
        return None
    alpha = np.asarray(glyph.getchannel("A"))
    if (alpha > 0).mean() < 0.02:
        return None
    square = Image.new("RGBA", (GLYPH_SIDE, GLYPH_SIDE), (0, 0, 0, 0))
    square.paste(glyph, ((GLYPH_SIDE - glyph.width) // 2, (GLYPH_SIDE - glyph.height) // 2))
    return square


def is_missing_glyph(image: Image.Image, tofu: Image.Image | None) -> bool:
    """The font's 'no glyph' box looks the same for every missing character."""
    return tofu is not None and np.array_equal(np.asarray(image), np.asarray(tofu))


def load_glyphs(entries: list[EmojiEntry] | None = None) -> tuple[list[EmojiEntry], list[Image.Image]]:
    """The entries the font draws, and their ``GLYPH_SIDE`` RGBA glyphs, in the same order."""
    entries = entries if entries is not None else load_entries()
    font = glyph_font()
    tofu = render_rgba("\U000e0000", font)
    kept, images = [], []
    for entry in entries:
        image = render_rgba(entry.emoji, font)
        if image is None or is_missing_glyph(image, tofu):
            continue
        kept.append(entry)
        images.append(image)
    return kept, images
