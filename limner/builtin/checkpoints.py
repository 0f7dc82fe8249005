"""Training checkpoints, written whole or not at all: a run stopped at any moment resumes from the last one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def save(state: dict[str, Any], path: Path) -> None:
    """``state`` at ``path``, through a temporary file renamed into place (never a half-written checkpoint)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, partial)
    os.replace(partial, path)


def load(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (this machine's own training output), or None when there is none yet."""
    if not path.exists():
        return None
    state: dict[str, Any] = torch.load(path, weights_only=False)
    return state
