"""LoRA adapters with random (seeded) weights for the tiny pipelines, saved the way trainers save them.

``build_tiny_lora`` adds a peft LoRA to a pipeline's denoiser (its UNet or transformer) with non-zero
random weights, so an adapter visibly changes the images, and writes it with the pipeline class's own
``save_lora_weights``: one ``pytorch_lora_weights.safetensors`` in diffusers' key layout, which is
what ``load_lora_weights`` reads from a local file or a pulled hub repository.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

LORA_FILE = "pytorch_lora_weights.safetensors"
TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def build_tiny_lora(pipeline_dir: Path, out: Path, *, seed: int = 1, rank: int = 4) -> Path:
    """Write a LoRA for the pipeline at ``pipeline_dir`` into ``out``; returns the ``.safetensors`` file."""
    pipe: Any = DiffusionPipeline.from_pretrained(pipeline_dir, local_files_only=True)
    name = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
    denoiser = getattr(pipe, name)
    torch.manual_seed(seed)
    denoiser.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=TARGETS, init_lora_weights=False))
    layers = get_peft_model_state_dict(denoiser)
    out.mkdir(parents=True, exist_ok=True)
    type(pipe).save_lora_weights(out, **{f"{name}_lora_layers": layers}, safe_serialization=True)
    return out / LORA_FILE
