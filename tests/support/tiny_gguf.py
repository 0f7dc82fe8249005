"""A tiny GGUF denoiser written with the ``gguf`` package's own writer, beside a diffusers directory for the rest.

``build_tiny_gguf`` copies a tiny Stable Diffusion directory, writes its UNet in the original (LDM) checkpoint
layout that diffusers' single-file loader converts, as llama.cpp-style Q8_0 blocks for every linear weight whose
rows fit the 32-value block (the rest as F32, as real GGUF files keep norms and biases), and removes the UNet's
weights from the copy, so a model that loads can only have read them from the GGUF file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import gguf
from diffusers import UNet2DConditionModel

from tests.support.tiny_diffusers import _ldm_unet_state

BLOCK = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0]


def build_tiny_gguf(sd_dir: Path, out: Path) -> tuple[Path, Path, int]:
    """Returns (the ``.gguf`` file, the config directory to load it with, how many tensors are Q8_0)."""
    config_dir = out / "config"
    shutil.copytree(sd_dir, config_dir)
    unet = UNet2DConditionModel.from_pretrained(sd_dir, subfolder="unet", local_files_only=True)
    path = out / "tiny-sd-unet-Q8_0.gguf"
    writer = gguf.GGUFWriter(str(path), arch="sd1")
    quantized = 0
    for name, tensor in _ldm_unet_state(unet).items():
        data = tensor.detach().float().numpy()
        if data.ndim == 2 and data.shape[-1] % BLOCK == 0:
            blocks = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, blocks, raw_shape=blocks.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            quantized += 1
        else:
            writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    for weights in (config_dir / "unet").glob("*.safetensors"):
        weights.unlink()
    return path, config_dir, quantized
