"""``limner pull --lora-for MODEL``: fetch a LoRA adapter (a hub repo or one ``.safetensors`` URL) and attach it.

An adapter repo holds one weights file (``pytorch_lora_weights.safetensors`` or a single ``.safetensors``),
not a pipeline, so only that file is fetched, checked against the hub's sha256 and its safetensors header,
and installed under ``<models>/loras/<name>/`` with the same stage-then-rename as models. The catalog gets a
``[[models.loras]]`` table under the base model's entry; requests then name it in ``loras``.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from limner.pull import (
    _install,
    _prune,
    _read_manifest,
    _stage_dir,
    _target,
    _up_to_date,
    _write_manifest,
    check_id,
    pull_url,
)
from limner.pull.catalog_file import PullResult
from limner.pull.hub import Hub, Plan, PullError, resolve_endpoint, translated

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
    stage, final = _stage_dir(root, lora_id), _target(root, lora_id)
    hub = Hub(endpoint, token)
    with translated(endpoint, source, revision):
        commit = hub.api.model_info(source, revision=revision).sha
        if commit is None:
            raise PullError(f"{endpoint} gave no commit for {source}; is it a Hugging Face hub?")
        listing = hub.api.list_repo_tree(source, recursive=True, revision=commit)
        tree = {entry.path: entry for entry in listing if isinstance(entry, hub.hf.RepoFile)}
        chosen = weights_file(source, tree, weight_name)
        plan = Plan(source, commit, tree, {chosen: chosen})
        downloaded = not _up_to_date(final, plan)
        if downloaded:
            hub.fetch(plan, stage)
    if downloaded:
        _prune(stage, {chosen})
        _write_manifest(stage, {"source": source, "endpoint": endpoint, "revision": revision, "kind": "lora"}, plan)
        _install(stage, final)
    else:
        shutil.rmtree(stage, ignore_errors=True)
    files = _read_manifest(final).get("files", {})
    return PullResult(
        model_id=lora_id,
        source=source,
        path=(final / chosen).resolve(),
        files=len(files),
        size=sum(int(info["size"]) for info in files.values()),
        commit=commit,
        downloaded=downloaded,
    )


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
