"""The catalog of a fresh install: the built-in model, answering to its earlier ids and to every dialect's
default model name, so each reference's examples work unchanged but for the host."""

from __future__ import annotations

from limner.engines.catalog import ModelEntry

BUILTIN_MODEL_ID = "limner-emoji"
BUILTIN_OLD_IDS = ("limner-emoji-32",)
"""Earlier ids of the built-in model, kept as aliases so clients that ask for them still get it."""
DIALECT_DEFAULT_ALIASES = (
    # OpenAI / AIGNE Hub: every image model name of the current openai SDK (``openai.types.ImageModel``)
    "dall-e-2",
    "dall-e-3",
    "gpt-image-1",
    "gpt-image-1-mini",
    "gpt-image-1.5",
    "gpt-image-2",
    "gpt-image-2-2026-04-21",
    "gpt-image-2.5-sunburst",
    "gpt-image-2.5-sunburst-2026-09-08",
    "gpt-image-2.5-flare",
    "gpt-image-2.5-flare-2026-09-08",
    "gpt-image-2.6-sunburst",
    "gpt-image-2.6-flare",
    "chatgpt-image-latest",
    # AI.ML
    "image-gen.pro-1.0",
    # Milady
    "google/gemini-2.5-flash-image",
    "google/gemini-3.1-flash-image-preview",
    "google/gemini-3-pro-image",
    "openai/gpt-5-nano",
    "bfl/flux-kontext-max",
    # ImagineArt
    "text-to-image",
    "image-edit",
)


def default_models() -> list[ModelEntry]:
    """The catalog of a fresh install: the built-in model, answering to every dialect's default name."""
    return [
        ModelEntry(
            id=BUILTIN_MODEL_ID,
            engine="builtin",
            name="limner emoji",
            description="limner's built-in model: every emoji, from plain words, crisp at any size, transparent.",
            aliases=[*BUILTIN_OLD_IDS, *DIALECT_DEFAULT_ALIASES],
        )
    ]
