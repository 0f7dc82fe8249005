"""Tiny SDXL, SD 3 and FLUX.1 pipelines with random (seeded) weights, built offline in seconds.

Each builder writes a diffusers directory (``save_pretrained``) whose configs name the real pipeline
classes, so limner's loading, family detection and task derivation (image-to-image, inpainting) run
their real code paths. Tokenizers are the byte-level CLIP one from ``tiny_diffusers`` (the T5 slots of
SD 3 and FLUX get it too: the pipelines only pad and truncate with it).
Nothing is fetched from a hub.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
)

from tests.support.tiny_diffusers import END_TOKEN, SEED, START_TOKEN, _tiny_tokenizer

LATENT = 8  # x 8 (VAE scale factor) = 64 pixels


def build_tiny_sdxl(path: Path, *, turbo: bool = False) -> Path:
    """A tiny ``StableDiffusionXLPipeline`` (two CLIP encoders, text-time conditioning) at ``path``."""
    tokenizer = _tokenizer()
    torch.manual_seed(SEED)
    pipe: Any = StableDiffusionXLPipeline(
        unet=_sdxl_unet(cross_attention_dim=64, text_embeds=32),
        vae=_vae(),
        text_encoder=CLIPTextModel(_clip_config(tokenizer)),
        text_encoder_2=CLIPTextModelWithProjection(_clip_config(tokenizer, projection_dim=32)),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        scheduler=_euler(turbo),
    )
    pipe.save_pretrained(path)
    return path


def build_tiny_sdxl_refiner(path: Path) -> Path:
    """A tiny SDXL refiner: image-to-image with the second text encoder only and aesthetic-score conditioning."""
    tokenizer = _tokenizer()
    torch.manual_seed(SEED + 1)
    pipe: Any = StableDiffusionXLImg2ImgPipeline(
        # the refiner's time ids are 5 numbers (size, crop, aesthetic score) instead of 6
        unet=_sdxl_unet(cross_attention_dim=32, text_embeds=32, time_ids=5),
        vae=_vae(),
        text_encoder=None,
        text_encoder_2=CLIPTextModelWithProjection(_clip_config(tokenizer, projection_dim=32)),
        tokenizer=None,
        tokenizer_2=tokenizer,
        scheduler=_euler(False),
        requires_aesthetics_score=True,
    )
    pipe.save_pretrained(path)
    return path


def build_tiny_sd3(path: Path) -> Path:
    """A tiny ``StableDiffusion3Pipeline`` (MMDiT, two CLIP encoders, no T5)."""
    tokenizer = _tokenizer()
    torch.manual_seed(SEED)
    pipe: Any = StableDiffusion3Pipeline(
        transformer=SD3Transformer2DModel(
            sample_size=LATENT,
            patch_size=1,
            in_channels=16,  # SD 3's VAE has 16 latent channels, which its inpainting pipeline insists on
            num_layers=1,
            attention_head_dim=8,
            num_attention_heads=4,
            caption_projection_dim=32,
            joint_attention_dim=32,
            pooled_projection_dim=64,
            out_channels=16,
        ),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_vae(shift=True, channels=16),
        text_encoder=CLIPTextModelWithProjection(_clip_config(tokenizer, projection_dim=32)),
        tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(_clip_config(tokenizer, projection_dim=32)),
        tokenizer_2=tokenizer,
        text_encoder_3=_t5(tokenizer),
        tokenizer_3=tokenizer,
    )
    pipe.save_pretrained(path)
    return path


def build_tiny_flux(path: Path, *, dev: bool = False) -> Path:
    """A tiny ``FluxPipeline``: schnell-like (no guidance embedding) or dev-like (``guidance_embeds``)."""
    tokenizer = _tokenizer()
    torch.manual_seed(SEED)
    pipe: Any = FluxPipeline(
        transformer=FluxTransformer2DModel(
            patch_size=1,
            in_channels=16,  # 4 latent channels, packed 2x2
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            axes_dims_rope=(4, 4, 8),
            guidance_embeds=dev,
        ),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=dev),
        vae=_vae(shift=True),
        text_encoder=CLIPTextModel(_clip_config(tokenizer)),
        tokenizer=tokenizer,
        text_encoder_2=_t5(tokenizer),
        tokenizer_2=tokenizer,
    )
    pipe.save_pretrained(path)
    return path


def _tokenizer() -> CLIPTokenizer:
    with tempfile.TemporaryDirectory() as scratch:
        return _tiny_tokenizer(Path(scratch))


def _t5(tokenizer: CLIPTokenizer) -> T5EncoderModel:
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=8,
        d_ff=37,
        num_layers=1,
        num_heads=4,
        relative_attention_num_buckets=8,
        decoder_start_token_id=0,
    )
    return T5EncoderModel(config)


def _clip_config(tokenizer: CLIPTokenizer, projection_dim: int | None = None) -> CLIPTextConfig:
    ids = tokenizer.get_vocab()
    extra = {"projection_dim": projection_dim} if projection_dim else {}
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=ids[START_TOKEN],
        eos_token_id=ids[END_TOKEN],
        pad_token_id=ids[END_TOKEN],
        **extra,
    )


def _sdxl_unet(*, cross_attention_dim: int, text_embeds: int, time_ids: int = 6) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=LATENT,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=time_ids * 8 + text_embeds,
        cross_attention_dim=cross_attention_dim,
        norm_num_groups=8,
    )


def _vae(*, shift: bool = False, channels: int = 4) -> AutoencoderKL:
    """Four levels, so the scale factor is 8; SD 3 and FLUX configs also carry a shift factor."""
    extra = {"shift_factor": 0.0609, "scaling_factor": 1.5035} if shift else {}
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=channels,
        block_out_channels=(8, 8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=LATENT * 8,
        **extra,
    )


def _euler(turbo: bool) -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="trailing" if turbo else "leading",
        steps_offset=1,
    )
