"""The built-in model: a small emoji diffusion model trained by limner and shipped inside it."""

from pathlib import Path

BUILTIN_MODEL_DIR = Path(__file__).resolve().parent / "emoji-32"
"""Diffusers-format directory of the shipped weights (text encoder excluded: it comes from a package)."""
