"""Tiny ControlNet, T2I-Adapter and IP-Adapter weights (random, seeded) for the tiny SD and SDXL pipelines.

Each builder reads the base model's UNet config so the shapes fit, and writes what an operator would put
in the catalog: a ControlNet or T2I-Adapter diffusers directory, or an IP-Adapter ``.safetensors`` file
plus a CLIP vision encoder directory. ControlNets start with zero convolutions (no effect until trained):
these are drawn at random instead, and the image's path in is amplified, so a control and its image
visibly change the picture. Nothing is fetched from a hub.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import ControlNetModel, T2IAdapter, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

IMAGE_EMBED_DIM = 16
IP_TOKENS = 4  # the plain IP-Adapter's image projection makes four tokens


def _unet(base: Path) -> Any:
    return UNet2DConditionModel.from_pretrained(base / "unet")


def build_tiny_controlnet(base: Path, path: Path, *, seed: int = 1) -> Path:
    """A ControlNet copied from ``base``'s UNet, its zero convolutions replaced by random ones."""
    torch.manual_seed(seed)
    controlnet: Any = ControlNetModel.from_unet(_unet(base), conditioning_embedding_out_channels=(8, 16, 16, 32))
    embedding = controlnet.controlnet_cond_embedding
    with torch.no_grad():
        for conv in (*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block):
            conv.weight.normal_(0, 0.3)
            conv.bias.normal_(0, 0.1)
        # the image's path in: loud enough that two control images give two plainly different pictures
        embedding.conv_in.weight.mul_(30)
        embedding.conv_out.weight.normal_(0, 9.0)
        embedding.conv_out.bias.normal_(0, 0.1)
    controlnet.save_pretrained(path)
    return path


def build_tiny_t2i_adapter(base: Path, path: Path, *, seed: int = 2) -> Path:
    """A T2I-Adapter whose feature maps match ``base``'s UNet blocks (``full_adapter_xl`` for SDXL)."""
    config = _unet(base).config
    xl = config.addition_embed_type == "text_time"
    torch.manual_seed(seed)
    adapter: Any = T2IAdapter(
        in_channels=3,
        channels=list(config.block_out_channels),
        num_res_blocks=1,
        downscale_factor=16 if xl else 8,
        adapter_type="full_adapter_xl" if xl else "full_adapter",
    )
    with torch.no_grad():
        for parameter in adapter.parameters():
            parameter.mul_(3.0)  # louder than the initialisation, so its effect is plain in 2 steps
    adapter.save_pretrained(path)
    return path


def build_tiny_ip_adapter(base: Path, path: Path, *, seed: int = 3) -> tuple[Path, Path]:
    """A plain IP-Adapter for ``base`` (``path/ip-adapter.safetensors``) and its CLIP vision encoder
    (``path/image_encoder``); returns (weights file, encoder directory)."""
    unet = _unet(base)
    cross = unet.config.cross_attention_dim
    torch.manual_seed(seed)
    state: dict[str, torch.Tensor] = {
        "image_proj.proj.weight": torch.randn(IP_TOKENS * cross, IMAGE_EMBED_DIM) * 0.5,
        "image_proj.proj.bias": torch.randn(IP_TOKENS * cross) * 0.1,
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    key = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        hidden = _hidden_size(name, list(unet.config.block_out_channels))
        state[f"ip_adapter.{key}.to_k_ip.weight"] = torch.randn(hidden, cross) * 0.5
        state[f"ip_adapter.{key}.to_v_ip.weight"] = torch.randn(hidden, cross) * 0.5
        key += 2
    path.mkdir(parents=True, exist_ok=True)
    weights = path / "ip-adapter.safetensors"
    save_file(state, str(weights))
    encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=37,
            projection_dim=IMAGE_EMBED_DIM,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        )
    )
    encoder.save_pretrained(path / "image_encoder")
    return weights, path / "image_encoder"


def _hidden_size(name: str, channels: list[int]) -> int:
    if name.startswith("mid_block"):
        return channels[-1]
    block = int(name.split(".")[1])
    return list(reversed(channels))[block] if name.startswith("up_blocks") else channels[block]
