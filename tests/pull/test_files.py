"""Which hub files a pipeline pull keeps, and the plain names they get; no network, no weights."""

from __future__ import annotations

import json
from pathlib import Path

from limner.pull.files import canonicalize, pipeline_components, select_files

# The shape of real repos: SDXL-Turbo-like fp32 + fp16 variants, pickles, ONNX, Flax, an all-in-one checkpoint;
# a sharded fp16 text encoder (SD3-like); a component that only ships pickles; a component the index disables.
TREE = [
    ".gitattributes",
    "README.md",
    "LICENSE.md",
    "model_index.json",
    "sd_xl_turbo_1.0_fp16.safetensors",
    "image.png",
    "scheduler/scheduler_config.json",
    "tokenizer/merges.txt",
    "tokenizer/vocab.json",
    "tokenizer/special_tokens_map.json",
    "tokenizer_2/spiece.model",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "unet/diffusion_pytorch_model.bin",
    "unet/diffusion_pytorch_model.fp16.bin",
    "unet/diffusion_flax_model.msgpack",
    "unet/model.onnx",
    "text_encoder/config.json",
    "text_encoder/model.safetensors.index.json",
    "text_encoder/model-00001-of-00002.safetensors",
    "text_encoder/model-00002-of-00002.safetensors",
    "text_encoder/model.safetensors.index.fp16.json",
    "text_encoder/model.fp16-00001-of-00002.safetensors",
    "text_encoder/model.fp16-00002-of-00002.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.bin",
    "safety_checker/config.json",
    "safety_checker/model.safetensors",
]
COMPONENTS = {"scheduler", "tokenizer", "tokenizer_2", "unet", "text_encoder", "vae"}


def test_one_copy_of_each_component_fp16_first_under_plain_names() -> None:
    assert select_files(TREE, COMPONENTS) == {
        "README.md": "README.md",
        "LICENSE.md": "LICENSE.md",
        "model_index.json": "model_index.json",
        "scheduler/scheduler_config.json": "scheduler/scheduler_config.json",
        "tokenizer/merges.txt": "tokenizer/merges.txt",
        "tokenizer/vocab.json": "tokenizer/vocab.json",
        "tokenizer/special_tokens_map.json": "tokenizer/special_tokens_map.json",
        "tokenizer_2/spiece.model": "tokenizer_2/spiece.model",
        "unet/config.json": "unet/config.json",
        "unet/diffusion_pytorch_model.fp16.safetensors": "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/config.json": "text_encoder/config.json",
        "text_encoder/model.safetensors.index.fp16.json": "text_encoder/model.safetensors.index.json",
        "text_encoder/model.fp16-00001-of-00002.safetensors": "text_encoder/model-00001-of-00002.safetensors",
        "text_encoder/model.fp16-00002-of-00002.safetensors": "text_encoder/model-00002-of-00002.safetensors",
        "vae/config.json": "vae/config.json",
        "vae/diffusion_pytorch_model.bin": "vae/diffusion_pytorch_model.bin",  # no safetensors: the only copy
    }


def test_variant_none_takes_the_plain_files() -> None:
    chosen = select_files(TREE, COMPONENTS, variant=None)
    assert chosen["unet/diffusion_pytorch_model.safetensors"] == "unet/diffusion_pytorch_model.safetensors"
    assert "unet/diffusion_pytorch_model.fp16.safetensors" not in chosen
    assert "text_encoder/model.safetensors.index.json" in chosen


def test_configs_only_for_a_single_file() -> None:
    chosen = select_files(TREE, COMPONENTS, weights=False)
    assert not any(path.endswith((".safetensors", ".bin")) or ".index" in path for path in chosen)
    assert "unet/config.json" in chosen and "tokenizer/vocab.json" in chosen


def test_components_come_from_model_index(tmp_path: Path) -> None:
    index = tmp_path / "model_index.json"
    index.write_text(
        json.dumps(
            {
                "_class_name": "StableDiffusionXLPipeline",
                "_diffusers_version": "0.30.0",
                "unet": ["diffusers", "UNet2DConditionModel"],
                "safety_checker": [None, None],
                "force_zeros_for_empty_prompt": True,
            }
        )
    )
    assert pipeline_components(index) == {"unet"}


def test_canonicalize_renames_shards_and_rewrites_their_index(tmp_path: Path) -> None:
    wanted = select_files(TREE, COMPONENTS)
    weight_map = {"a": "model.fp16-00001-of-00002.safetensors", "b": "model.fp16-00002-of-00002.safetensors"}
    for hub_path in wanted:
        (tmp_path / hub_path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / hub_path).write_text("x")
    (tmp_path / "text_encoder/model.safetensors.index.fp16.json").write_text(json.dumps({"weight_map": weight_map}))
    canonicalize(tmp_path, wanted)
    on_disk = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert on_disk == set(wanted.values())
    index = json.loads((tmp_path / "text_encoder/model.safetensors.index.json").read_text())
    assert index["weight_map"] == {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
