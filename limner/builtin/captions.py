"""Training captions for the caption encoder, drawn from each emoji's CLDR name, keywords and shortcodes.

One caption per draw, by a recipe chosen at random: the name (alone or with a keyword or two), a shortcode, or
keywords alone (so "pepperoni" finds the pizza); keywords are CLDR's and emojilib's. Some draws add a word that
says nothing about the subject (``FILLERS``), so that such words learn to weigh little. These templates and
fillers are the only phrasings training sees; the evaluation's held-out phrasings use none of them
(``benchmarks/builtin_quality.py``).
"""

from __future__ import annotations

import random

from limner.builtin.emoji_set import EmojiEntry

TEMPLATES = ("{}", "a {}", "an emoji of {}", "a picture of {}", "{} emoji", "{} icon", "an image of a {}")
FILLERS = ("small", "big", "nice", "colorful", "simple", "flat", "single", "little", "bright", "lovely")


def name_of(entry: EmojiEntry) -> str:
    """The CLDR short name as words ("flag: Japan" -> "flag Japan")."""
    return entry.label.replace(":", " ").replace("  ", " ").strip()


def all_captions(entry: EmojiEntry) -> list[str]:
    """Every distinct caption text the recipes can start from: the name, each shortcode, each keyword."""
    return [name_of(entry), *entry.shortcodes, *entry.tags, *entry.keywords]


def draw_caption(entry: EmojiEntry, rng: random.Random) -> str:
    """One random training caption for ``entry``."""
    name = name_of(entry)
    tags = list(entry.tags) + list(entry.keywords)
    roll = rng.random()
    if roll < 0.35 or not tags:
        text = name
        if entry.shortcodes and rng.random() < 0.3:
            text = rng.choice(entry.shortcodes)
    elif roll < 0.65:
        extra = rng.sample(tags, k=min(len(tags), rng.randint(1, 2)))
        parts = [name, *extra]
        rng.shuffle(parts)
        text = " ".join(parts)
    else:
        text = " ".join(rng.sample(tags, k=min(len(tags), rng.randint(1, 3))))
    if rng.random() < 0.25:
        text = f"{rng.choice(FILLERS)} {text}"
    return rng.choice(TEMPLATES).format(text)
