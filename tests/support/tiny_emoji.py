"""The first-generation emoji diffusion pipeline (``limner.builtin.pipeline``), built small with random seeded
weights: no weights ship for it any more, and step-level batching (``BuiltinSteps``) is tested on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from limner.builtin.pipeline import EmojiDiffusionPipeline
from limner.builtin.train import build_unet, inference_scheduler
from limner.engines.catalog import ModelEntry

PIPELINE_CLASS = "limner.builtin.pipeline:EmojiDiffusionPipeline"


def build_tiny_emoji_diffusion(path: Path, width: int = 16) -> Path:
    """Save the pipeline to ``path`` at ``width`` (the real model: 48, block channels 48/96/192)."""
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    pipe: Any = EmojiDiffusionPipeline(build_unet(width=width), inference_scheduler())
    pipe.save_pretrained(path)
    return path


def emoji_diffusion_entry(path: Path, model_id: str = "emoji-diffusion", **fields: Any) -> ModelEntry:
    """A catalog entry serving the pipeline at ``path`` through the diffusers engine (step-level batching on)."""
    return ModelEntry(
        id=model_id,
        engine="diffusers",
        path=path,
        pipeline_class=PIPELINE_CLASS,
        native_size=(32, 32),
        device="cpu",
        **fields,
    )
