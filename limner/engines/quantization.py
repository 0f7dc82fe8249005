"""Quantised weights for a loaded diffusers pipeline, per component, through torchao's public ``quantize_``.

A catalog entry names a mode (``quantization``) and the components it applies to (``quantize``: the
denoiser, the text encoders). The int8 modes run on any device, the CPU included: ``int8-weight`` keeps
weights in int8 and computes in the pipeline's dtype (about a quarter of float32's weight memory, close to
its images); ``int8-dynamic`` also quantises activations (faster matrix products where int8 kernels exist,
further from float32). ``fp8-weight``, ``int4-weight`` and ``nf4`` (bitsandbytes' 4-bit NormalFloat, applied
while the weights load through diffusers' ``PipelineQuantizationConfig``) need a CUDA GPU; asked for elsewhere,
the model fails to load with a message that says so and which modes would work. A GGUF denoiser
(``limner.engines.gguf_loading``) is quantised already: only its text encoders may be quantised again.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Collection, Sequence
from typing import Any, Literal

from limner.core.errors import ModelNotAvailable

Quantization = Literal["none", "int8-weight", "int8-dynamic", "fp8-weight", "int4-weight", "nf4"]
Component = Literal["denoiser", "text_encoders"]
DEFAULT_QUANTIZED: tuple[Component, ...] = ("denoiser",)
CPU_MODES = ("int8-weight", "int8-dynamic")
CUDA_MODES = ("fp8-weight", "int4-weight", "nf4")
AT_LOAD = ("nf4",)
"""Modes applied while the weights are read (bitsandbytes), not to the loaded modules (torchao)."""
COMPONENT_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "denoiser": ("unet", "transformer"),
    "text_encoders": ("text_encoder", "text_encoder_2", "text_encoder_3"),
}
"""Which of a diffusers pipeline's attributes each component name covers (whichever the pipeline has)."""


def check_quantization(mode: str, device: Any, components: Sequence[str] = (), *, gguf: bool = False) -> None:
    """Refuse, before any weights are read, a mode this machine cannot run, saying what would work."""
    if mode == "none":
        return
    if gguf and "denoiser" in components:
        raise ModelNotAvailable(
            f"quantization = {mode!r} cannot apply to a GGUF denoiser, which is quantised already: "
            "set quantize = [\"text_encoders\"], or quantization = 'none'."
        )
    if mode in CUDA_MODES and device.type != "cuda":
        raise ModelNotAvailable(
            f"quantization = {mode!r} needs a CUDA GPU, and this model runs on {device.type}: "
            f"use {' or '.join(repr(m) for m in CPU_MODES)} here, or 'none'."
        )
    if mode in AT_LOAD:
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ModelNotAvailable(f"quantization = {mode!r} needs bitsandbytes: pip install 'limner[cuda]'.")
    elif importlib.util.find_spec("torchao") is None:
        raise ModelNotAvailable(f"quantization = {mode!r} needs torchao: pip install 'limner[local]'.")


def load_arguments(mode: str, components: Sequence[str], present: Collection[str]) -> dict[str, Any]:
    """``from_pretrained`` arguments for the modes applied while the weights load (none for the others);
    ``present``: the pipeline's component names (its ``model_index.json``)."""
    if mode not in AT_LOAD:
        return {}
    from diffusers import PipelineQuantizationConfig

    attributes = [a for component in components for a in COMPONENT_ATTRIBUTES[component] if a in present]
    config = PipelineQuantizationConfig(
        quant_backend="bitsandbytes_4bit",
        quant_kwargs={"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": "bfloat16"},
        components_to_quantize=attributes,
    )
    return {"quantization_config": config}


def quantize(pipe: Any, mode: str, components: Sequence[str]) -> list[str]:
    """Quantise the named components of ``pipe`` in place; returns the attributes it quantised."""
    if mode == "none":
        return []
    if mode in AT_LOAD:  # done while loading: report what was
        return [a for c in components for a in COMPONENT_ATTRIBUTES[c] if getattr(pipe, a, None) is not None]
    from torchao.quantization import quantize_

    done = []
    for component in components:
        for attribute in COMPONENT_ATTRIBUTES[component]:
            module = getattr(pipe, attribute, None)
            if module is not None:
                quantize_(module, _config(mode))
                done.append(attribute)
    return done


def _config(mode: str) -> Any:
    from torchao import quantization

    configs = {
        "int8-weight": quantization.Int8WeightOnlyConfig,
        "int8-dynamic": quantization.Int8DynamicActivationInt8WeightConfig,
        "fp8-weight": quantization.Float8WeightOnlyConfig,
        "int4-weight": quantization.Int4WeightOnlyConfig,
    }
    return configs[mode]()
