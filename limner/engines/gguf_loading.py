"""GGUF single-file denoisers: a UNet or transformer quantised to GGUF, with the rest of the pipeline beside it.

A ``.gguf`` file (the format llama.cpp and the FLUX/SD3 quantisations on the hubs use) holds only the denoiser,
its weights kept in their quantised blocks (Q8_0, Q4_K, ...) and expanded layer by layer as each runs, so its
memory is the file's size. The other components (text encoders, VAE, scheduler, tokenizers) come from
``config_dir``, a diffusers directory of the same architecture holding their weights; the denoiser's own
weights there are not read. Loading goes through diffusers' public ``from_single_file`` of the denoiser class
with a ``GGUFQuantizationConfig`` (the ``gguf`` package reads the file), then the pipeline's
``from_pretrained`` with that denoiser passed in. Both layouts diffusers reads are accepted: the original
checkpoint names (converted by diffusers on load) and diffusers' own.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from limner.core.errors import ModelNotAvailable

GGUF_SUFFIX = ".gguf"
DENOISERS = ("transformer", "unet")
"""The pipeline attribute (and ``config_dir`` subfolder) a denoiser lives in, by preference."""


def is_gguf(path: Path) -> bool:
    return path.suffix.lower() == GGUF_SUFFIX


def load_gguf(path: Path, config_dir: Path, pipeline_cls: Any, dtype: Any, dtype_argument: dict[str, Any]) -> Any:
    """The ``pipeline_cls`` pipeline of ``config_dir`` with its denoiser read from the GGUF file ``path``,
    computing in ``dtype`` (``dtype_argument``: how this diffusers spells it to ``from_pretrained``)."""
    if importlib.util.find_spec("gguf") is None:
        raise ModelNotAvailable(f"{path.name} is a GGUF file, read with the gguf package: pip install 'limner[local]'.")
    subfolder = next((name for name in DENOISERS if (config_dir / name / "config.json").is_file()), None)
    if subfolder is None:
        raise ModelNotAvailable(f"config_dir {config_dir} has no unet/ or transformer/ config for the GGUF denoiser.")
    denoiser_class = _denoiser_class(config_dir / subfolder / "config.json")
    from diffusers import GGUFQuantizationConfig

    denoiser = denoiser_class.from_single_file(
        str(path),
        config=str(config_dir),
        subfolder=subfolder,
        quantization_config=GGUFQuantizationConfig(compute_dtype=dtype),
        local_files_only=True,
        **dtype_argument,
    )
    components = {subfolder: denoiser}
    return pipeline_cls.from_pretrained(str(config_dir), local_files_only=True, **components, **dtype_argument)


def _denoiser_class(config: Path) -> Any:
    """The diffusers model class ``config`` names, if it reads single files."""
    import diffusers

    try:
        name = json.loads(config.read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError):
        name = None
    cls = getattr(diffusers, name, None) if isinstance(name, str) else None
    if cls is None or not hasattr(cls, "from_single_file"):
        raise ModelNotAvailable(f"diffusers cannot read a {name} denoiser ({config}) from a single GGUF file.")
    return cls
