"""Which files of a hub repo make a diffusers pipeline, and how they are named on disk.

A diffusers repo often holds the same weights several times: fp32 and fp16 variants, pickled ``.bin`` next to
``.safetensors``, ONNX, Flax, and an all-in-one checkpoint at the root. ``DiffusionPipeline.from_pretrained`` reads
one copy of each component that ``model_index.json`` names, so only that copy is fetched: safetensors before
pickles, the preferred variant (fp16: half the download, and CPUs upcast it), else the plain files. The chosen
variant is stored under the plain name (``unet/diffusion_pytorch_model.safetensors``), so the directory loads
without a ``variant`` argument in limner's engine, in diffusers, and in any other tool.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

_WEIGHT = re.compile(r"^(?P<stem>[^.]+?)(?:\.(?P<variant>\w+))?(?P<shard>-\d{5}-of-\d{5})?\.(?P<ext>safetensors|bin)$")
_INDEX = re.compile(r"^(?P<stem>[^.]+)\.(?P<ext>safetensors|bin)\.index(?:\.(?P<variant>\w+))?\.json$")
_COMPONENT_FILES = (".json", ".txt", ".model", ".tiktoken")  # configs, tokenizers (vocab, merges, sentencepiece)
_ROOT_FILES = ("model_index.json", "README.md", "LICENSE*", "LICENCE*", "NOTICE*")  # licences travel with weights


def pipeline_components(model_index: Path) -> set[str]:
    """The component folders ``model_index.json`` names (``"safety_checker": [null, null]`` is not one)."""
    index = json.loads(model_index.read_text())  # a ValueError here means: not a usable pipeline
    if not isinstance(index, dict):
        raise ValueError("model_index.json is not a JSON object")
    return {
        key
        for key, value in index.items()
        if not key.startswith("_") and isinstance(value, list) and len(value) == 2 and all(value)
    }


def select_files(
    tree: Iterable[str],
    components: set[str],
    *,
    variant: str | None = "fp16",
    weights: bool = True,
    without_weights: frozenset[str] = frozenset(),
) -> dict[str, str]:
    """Map each hub file a pipeline needs to its local name; ``weights=False`` keeps configs and tokenizers only,
    ``without_weights`` does so for the named components (a GGUF file brings the denoiser's weights).

    Per weight stem (``unet/diffusion_pytorch_model``) one family is kept: safetensors before pickles, then the
    preferred variant, the plain files, any other variant. A kept variant is renamed to the plain name.
    """
    chosen: dict[str, str] = {}
    families: dict[tuple[str, str], dict[tuple[str, str | None], list[str]]] = {}
    for path in tree:
        parts = PurePosixPath(path)
        if len(parts.parts) == 1:
            if any(PurePosixPath(path).match(pattern) for pattern in _ROOT_FILES):
                chosen[path] = path
            continue
        if parts.parts[0] not in components:
            continue
        weight, index = _WEIGHT.match(parts.name), _INDEX.match(parts.name)
        match = weight or index
        if match:
            key = (str(parts.parent), match["stem"])
            families.setdefault(key, {}).setdefault((match["ext"], match["variant"]), []).append(path)
        elif parts.suffix in _COMPONENT_FILES:
            chosen[path] = path
    if not weights:
        return chosen
    for (folder, _), options in families.items():
        if PurePosixPath(folder).parts[0] in without_weights:
            continue
        ext, kept = min(options, key=lambda option: _family_rank(option, variant))
        for path in options[(ext, kept)]:
            chosen[path] = _plain_name(path) if kept else path
    return chosen


def _family_rank(option: tuple[str, str | None], preferred: str | None) -> tuple[int, int, str]:
    ext, variant = option
    order = 0 if variant == preferred else 1 if variant is None else 2
    return (0 if ext == "safetensors" else 1, order, variant or "")


def _plain_name(path: str) -> str:
    parts = PurePosixPath(path)
    weight, index = _WEIGHT.match(parts.name), _INDEX.match(parts.name)
    if weight:
        name = f"{weight['stem']}{weight['shard'] or ''}.{weight['ext']}"
    elif index:
        name = f"{index['stem']}.{index['ext']}.index.json"
    else:
        return path
    return str(parts.with_name(name))


def canonicalize(stage: Path, wanted: dict[str, str]) -> None:
    """Rename kept variant files to the plain names; a sharded index's weight map follows its shards."""
    shard_names = {PurePosixPath(h).name: PurePosixPath(local).name for h, local in wanted.items() if h != local}
    for hub_path, local in wanted.items():
        if hub_path == local:
            continue
        source, target = stage / hub_path, stage / local
        if _INDEX.match(PurePosixPath(hub_path).name):
            index = json.loads(source.read_text())
            weight_map = index.get("weight_map", {})
            index["weight_map"] = {key: shard_names.get(value, value) for key, value in weight_map.items()}
            source.write_text(json.dumps(index, indent=2))
        source.replace(target)
