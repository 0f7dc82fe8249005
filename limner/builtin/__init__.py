"""The built-in model: every emoji Noto Color Emoji draws, found from plain words and drawn crisp at any size.

Trained by limner (``make train``, ``limner.builtin.train_emoji``) and shipped inside it. ``pipeline`` and
``train`` are the first generation (a 32x32 diffusion model), kept as limner's own example of a custom
diffusers pipeline: tests build tiny ones of it.
"""

from pathlib import Path

BUILTIN_MODEL_DIR = Path(__file__).resolve().parent / "emoji-64"
"""The shipped model directory (``glyph_pipeline.EmojiGlyphPipeline.from_pretrained`` reads it)."""
