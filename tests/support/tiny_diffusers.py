"""Tiny diffusers pipelines with random (seeded) weights, built offline in seconds for engine tests.

``build_tiny_sd`` writes a Stable Diffusion 1.x-style directory (``save_pretrained``); its VAE has four
levels, so the scale factor is 8 like the real thing and 64x64 / 64x128 requests give 8x8 / 8x16 latents.
``build_tiny_sd_single_file`` writes the same weights as one original-layout (LDM) ``.safetensors`` file
plus a diffusers config directory, which is what ``from_single_file(..., config=dir)`` needs offline.
Nothing is fetched from a hub: the CLIP tokenizer's vocabulary is written here, byte-level, no merges.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

SEED = 0
TEXT_DIM = 32
LATENT_SIZE = 8  # x 8 (VAE scale factor) = 64 pixels by default
START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"


def build_tiny_sd(path: Path) -> Path:
    """Save a tiny ``StableDiffusionPipeline`` (no safety checker) to ``path`` and return ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = _tiny_tokenizer(Path(scratch))
    torch.manual_seed(SEED)
    pipe: Any = StableDiffusionPipeline(
        unet=_tiny_unet(),
        vae=_tiny_vae(),
        text_encoder=_tiny_text_encoder(tokenizer),
        tokenizer=tokenizer,
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            timestep_spacing="trailing",
            steps_offset=1,
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path)
    return path


def build_tiny_sd_single_file(path: Path) -> Path:
    """Save the tiny pipeline as ``path/tiny-sd.safetensors`` (LDM layout) with its configs in ``path/config``.

    Returns the checkpoint file; pass ``config=path / "config"`` and ``local_files_only=True`` to load it.
    """
    from safetensors.torch import save_file

    config_dir = build_tiny_sd(path / "config")
    pipe = StableDiffusionPipeline.from_pretrained(config_dir, local_files_only=True)
    state: dict[str, torch.Tensor] = {}
    state.update(_ldm_unet_state(pipe.unet))
    state.update(_ldm_vae_state(pipe.vae))
    state.update(_ldm_clip_state(pipe.text_encoder))
    checkpoint = path / "tiny-sd.safetensors"
    save_file({key: value.contiguous() for key, value in state.items()}, str(checkpoint))
    # The config directory keeps only configs: the weights must come from the single file.
    for weights in config_dir.rglob("*.safetensors"):
        weights.unlink()
    return checkpoint


def _tiny_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def _tiny_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=LATENT_SIZE * 8,
    )


def _tiny_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    ids = tokenizer.get_vocab()
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_DIM,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=ids[START_TOKEN],
        eos_token_id=ids[END_TOKEN],
        pad_token_id=ids[END_TOKEN],
    )
    return CLIPTextModel(config)


def _tiny_tokenizer(scratch: Path) -> CLIPTokenizer:
    """A byte-level CLIP BPE vocabulary (every byte, alone and word-final) with no merges."""
    symbols = list(_bytes_to_unicode().values())
    vocab = [*symbols, *(symbol + "</w>" for symbol in symbols), START_TOKEN, END_TOKEN]
    (scratch / "vocab.json").write_text(json.dumps({token: index for index, token in enumerate(vocab)}))
    (scratch / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(
        vocab=str(scratch / "vocab.json"), merges=str(scratch / "merges.txt"), model_max_length=77
    )
    return tokenizer


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return dict(sorted(table.items()))


# --- diffusers -> original (LDM) key layout, the inverse of diffusers' single-file converters ---

_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _ldm_unet_state(unet: Any) -> dict[str, torch.Tensor]:  # a UNet2DConditionModel
    per_level = unet.config.layers_per_block + 1
    up_has_attention = {i: hasattr(block, "attentions") for i, block in enumerate(unet.up_blocks)}
    out: dict[str, torch.Tensor] = {}
    for key, value in unet.state_dict().items():
        parts = key.split(".")
        module, leaf = ".".join(parts[:-1]), parts[-1]
        if module in _UNET_FIXED:
            new = _UNET_FIXED[module]
        elif parts[0] == "down_blocks":
            level, kind = int(parts[1]), parts[2]
            if kind == "downsamplers":  # down_blocks.L.downsamplers.0.conv
                new = f"input_blocks.{(level + 1) * per_level}.0.op"
            else:
                index = 1 + level * per_level + int(parts[3])
                new = _block(f"input_blocks.{index}", kind, parts[4:-1])
        elif parts[0] == "mid_block":
            kind, index, inner = parts[1], int(parts[2]), ".".join(parts[3:-1])
            if kind == "resnets":  # middle_block holds [resnet, attention, resnet] without sub-slots
                new = f"middle_block.{2 * index}.{_RESNET.get(inner, inner)}"
            else:
                new = f"middle_block.1.{inner}"
        elif parts[0] == "up_blocks":
            level, kind = int(parts[1]), parts[2]
            if kind == "upsamplers":  # up_blocks.L.upsamplers.0.conv
                slot = 2 if up_has_attention[level] else 1
                new = f"output_blocks.{level * per_level + per_level - 1}.{slot}.conv"
            else:
                new = _block(f"output_blocks.{level * per_level + int(parts[3])}", kind, parts[4:-1])
        else:
            raise ValueError(f"no LDM name for UNet weight {key}")
        out[f"model.diffusion_model.{new}.{leaf}"] = value
    return out


def _block(prefix: str, kind: str, rest: list[str]) -> str:
    inner = ".".join(rest)
    if kind == "resnets":
        return f"{prefix}.0.{_RESNET.get(inner, inner)}"
    return f"{prefix}.1.{inner}"  # attentions keep diffusers' names inside the block


def _ldm_vae_state(vae: Any) -> dict[str, torch.Tensor]:  # an AutoencoderKL
    levels = len(vae.config.block_out_channels)
    out: dict[str, torch.Tensor] = {}
    for key, value in vae.state_dict().items():
        parts = key.split(".")
        module, leaf = ".".join(parts[:-1]), parts[-1]
        side = parts[0]
        if module.endswith("conv_norm_out"):
            new = f"{side}.norm_out"
        elif parts[1:2] == ["down_blocks"]:
            level = parts[2]
            if parts[3] == "downsamplers":
                new = f"encoder.down.{level}.downsample.conv"
            else:
                new = f"encoder.down.{level}.block.{parts[4]}.{_vae_resnet(parts[5:-1])}"
        elif parts[1:2] == ["up_blocks"]:
            level = levels - 1 - int(parts[2])
            if parts[3] == "upsamplers":
                new = f"decoder.up.{level}.upsample.conv"
            else:
                new = f"decoder.up.{level}.block.{parts[4]}.{_vae_resnet(parts[5:-1])}"
        elif parts[1:3] == ["mid_block", "resnets"]:
            new = f"{side}.mid.block_{int(parts[3]) + 1}.{_vae_resnet(parts[4:-1])}"
        elif parts[1:3] == ["mid_block", "attentions"]:
            inner = ".".join(parts[4:-1])
            new = f"{side}.mid.attn_1.{_VAE_ATTENTION[inner]}"
            if value.ndim == 2:  # LDM's attention projections are 1x1 convolutions
                value = value[:, :, None, None]
        else:
            new = module  # conv_in, conv_out, quant_conv, post_quant_conv keep their names
        out[f"first_stage_model.{new}.{leaf}"] = value
    return out


def _vae_resnet(rest: list[str]) -> str:
    inner = ".".join(rest)
    return "nin_shortcut" if inner == "conv_shortcut" else inner


def _ldm_clip_state(text_encoder: Any) -> dict[str, torch.Tensor]:  # a CLIPTextModel
    out: dict[str, torch.Tensor] = {}
    for key, value in text_encoder.state_dict().items():
        name = key if key.startswith("text_model.") else f"text_model.{key}"
        out[f"cond_stage_model.transformer.{name}"] = value
    return out


def build_tiny_x4_upscaler(path: Path) -> Path:
    """Save a tiny ``StableDiffusionUpscalePipeline`` (diffusers' 4x upscaler's shape: a 7-channel UNet
    conditioned on the noised low-resolution image and its noise level, a VAE that scales by 4) to ``path``."""
    from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionUpscalePipeline

    path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = _tiny_tokenizer(Path(scratch))
    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=7,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=8,
        norm_num_groups=8,
        num_class_embeds=100,
    )
    vae = AutoencoderKL(
        block_out_channels=(16, 16, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
        scaling_factor=0.08333,  # the real x4 upscaler's (diffusers warns on any other)
    )
    pipe: Any = StableDiffusionUpscalePipeline(
        vae=vae,
        text_encoder=_tiny_text_encoder(tokenizer),
        tokenizer=tokenizer,
        unet=unet,
        low_res_scheduler=DDPMScheduler(),
        scheduler=DDIMScheduler(prediction_type="v_prediction"),
        max_noise_level=99,
    )
    pipe.save_pretrained(path)
    return path
