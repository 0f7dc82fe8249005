"""Compiled denoisers that are ready before the first request, and stay compiled across restarts.

``compile = true`` compiles the denoiser while the model loads (``torch.compile`` through diffusers): the
engine runs one warm-up image at the model's default size, so the minutes of tracing and code generation are
spent while the model reports ``loading``, not in a caller's request. Where diffusers marks a model's repeated
blocks (``_repeated_blocks``: the UNet's transformer blocks, FLUX's double- and single-stream blocks) only one
block of each kind is compiled and reused (``compile_repeated_blocks``, regional compilation: the same speed,
a fraction of the compile time); other denoisers (SD 3's transformer) are compiled whole.

Compiled code lands in Inductor's on-disk cache, kept under the data directory (``<data_dir>/compile-cache``,
set through ``TORCHINDUCTOR_CACHE_DIR`` unless the operator set that variable), so a restart reads it back
instead of compiling again. The cache directory is one per process: the first model to compile fixes it.
A request at another size or batch shape compiles once more (Inductor marks the changed dimensions dynamic).

On the CPU, Inductor writes C++ and needs a C++ compiler; without one the model fails to load saying so.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from limner.core.errors import ModelNotAvailable

CACHE_VARIABLE = "TORCHINDUCTOR_CACHE_DIR"
CACHE_FOLDER = "compile-cache"


def check_compiler(device: Any) -> None:
    """Refuse ``compile`` on a CPU with no C++ compiler for Inductor's generated code."""
    if device.type == "cpu" and not any(shutil.which(name) for name in ("g++", "c++", "clang++")):
        raise ModelNotAvailable(
            "compile on the CPU needs a C++ compiler for the generated code (g++ or clang++ on PATH): "
            "install one (apt-get install g++) or remove compile from the catalog entry."
        )


def use_cache_dir(cache_dir: Path | None) -> Path | None:
    """Point Inductor's cache at ``cache_dir`` unless the environment already chose one; returns the one in use."""
    if cache_dir is not None and CACHE_VARIABLE not in os.environ:
        cache_dir.mkdir(parents=True, exist_ok=True)
        os.environ[CACHE_VARIABLE] = str(cache_dir)
    chosen = os.environ.get(CACHE_VARIABLE)
    return Path(chosen) if chosen else None


def compile_denoiser(pipe: Any) -> str:
    """Compile ``pipe``'s UNet or transformer in place; returns how: ``regional`` or ``whole``.

    In place, so the derived image-to-image and inpainting pipelines (which share the module) and LoRA
    adapters loaded later see the compiled one."""
    denoiser = getattr(pipe, "transformer", None) or getattr(pipe, "unet", None)
    if denoiser is None:
        raise ModelNotAvailable(f"compile: {type(pipe).__name__} has no UNet or transformer to compile.")
    if getattr(denoiser, "_repeated_blocks", None) and hasattr(denoiser, "compile_repeated_blocks"):
        denoiser.compile_repeated_blocks(fullgraph=True)
        return "regional"
    denoiser.compile()
    return "whole"
