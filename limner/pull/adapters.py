"""``limner pull --lora-for MODEL``: fetch a LoRA adapter (a hub repo or one ``.safetensors`` URL) and attach it.

An adapter repo holds one weights file (``pytorch_lora_weights.safetensors`` or a single ``.safetensors``),
not a pipeline, so only that file is fetched, checked against the hub's sha256 and its safetensors header,
and installed under ``<models>/loras/<name>/`` by the same path as a model's (``limner.pull.pull_plan``).
The catalog gets a ``[[models.loras]]`` table under the base model's entry; requests then name it in ``loras``.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from limner.pull import check_id, pull_plan, pull_url, pulled, stage_dir, target_dir
from limner.pull.catalog_file import PullResult
from limner.pull.hub import Hub, Plan, PullError, resolve_endpoint

LORA_DIR = "loras"
PREFERRED = "pytorch_lora_weights.safetensors"
"""The file diffusers' trainers write (``save_lora_weights``)."""


def pull_lora(
    source: str,
    *,
    models_dir: Path,
    name: str | None = None,
    weight_name: str | None = None,
    revision: str | None = None,
    sha256: str | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
    allow_http_loopback: bool = False,
) -> PullResult:
    """Pull an adapter into ``models_dir/loras/<name>``; ``path`` of the result is its ``.safetensors`` file."""
    root = models_dir / LORA_DIR
    if source.startswith(("http://", "https://")):
        result = pull_url(
            source,
            models_dir=root,
            name=name,
            sha256=sha256,
            endpoint=endpoint,
            allow_http_loopback=allow_http_loopback,
        )
        shutil.rmtree(result.path.parent / "config", ignore_errors=True)  # an adapter needs no pipeline configs
        notes = [note for note in result.notes if not note.startswith("no config directory")]
        return replace(result, config_dir=None, notes=notes)
    if sha256:
        raise PullError("--sha256 is for a single-file URL; a hub repo brings its own checksums")
    endpoint = resolve_endpoint(endpoint)
    lora_id = check_id(name or source.rsplit("/", 1)[-1].lower())
    stage, final = stage_dir(root, lora_id), target_dir(root, lora_id)
    hub = Hub(endpoint, token)

    def adapter() -> Plan:
        commit, tree = hub.files(source, revision)
        chosen = weights_file(source, tree, weight_name)
        return Plan(source, commit, tree, {chosen: chosen})

    plan, downloaded = pull_plan(hub, source, revision, adapter, stage, final, kind="lora")
    (chosen,) = plan.wanted
    return pulled(lora_id, source, final, plan.commit, downloaded=downloaded, path=final / chosen, family=None)


def weights_file(repo: str, tree: dict[str, Any], weight_name: str | None) -> str:
    """The adapter's file: ``--weight-name``, else diffusers' usual name, else the repo's only ``.safetensors``."""
    candidates = sorted(path for path in tree if path.endswith(".safetensors"))
    if weight_name is not None:
        if weight_name not in tree or not weight_name.endswith(".safetensors"):
            raise PullError(f"{repo} has no {weight_name}; its .safetensors files: {', '.join(candidates) or 'none'}")
        return weight_name
    if PREFERRED in tree:
        return PREFERRED
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise PullError(f"{repo} has no .safetensors file (pickled .bin/.ckpt files can run code when loaded)")
    raise PullError(f"{repo} has several .safetensors files ({', '.join(candidates)}): pass --weight-name FILE")


def lora_fields(result: PullResult, *, weight: float | None = None) -> dict[str, Any]:
    """The ``[[models.loras]]`` keys for a pulled adapter."""
    fields: dict[str, Any] = {"name": result.model_id, "path": str(result.path)}
    if weight is not None:
        fields["weight"] = weight
    fields["repo"] = result.source
    where = f" @ {result.commit[:12]}" if result.commit else ""
    fields["description"] = f"pulled from {result.source}{where}"
    return fields
