"""``limner pull``: fetch a real model (a hub repo, one ``.safetensors``/``.gguf`` URL) into limner's models directory.

Why it works this way:

- A hub repo is fetched by huggingface_hub, so auth, ``HF_ENDPOINT`` mirrors, redirects and Xet transfers behave
  as in every Hugging Face tool. Only what a diffusers pipeline loads is fetched: the components that
  ``model_index.json`` names, safetensors only (the fp16 variant where the repo has one), never the pickle, ONNX
  or Flax duplicates nor the repo's all-in-one checkpoints. fp16 variant files are stored under the plain names,
  so the result is an ordinary diffusers directory that any loader reads without a ``variant`` argument.
- huggingface_hub checks sizes, not contents, so every file is then checked against the hub's own checksums
  (sha256 for LFS files, git blob ids for the rest) and every safetensors header is parsed.
- Nothing half-done is ever visible: files land in ``<models>/.<id>.partial/``, which replaces ``<models>/<id>``
  in one rename once verified. A dropped connection resumes with an HTTP ``Range`` request; a pull cut short keeps
  its finished files (a plain URL also its partial file), so running the same command again fetches only the rest.
- Every failure is one :class:`PullError` line saying what failed and what to do about it.

Around this module: :mod:`limner.pull.hub` (the hub calls, checks and errors), :mod:`limner.pull.files` (which
files), :mod:`limner.pull.download` (a single file over HTTPS), :mod:`limner.pull.catalog_file` (the
``limner.toml`` entry and :class:`PullResult`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from limner.engines.families import Family, family_for
from limner.pull.catalog_file import PullResult
from limner.pull.download import DownloadError, download_url, is_loopback_url
from limner.pull.files import canonicalize
from limner.pull.hub import (
    OFFLINE_HINT,
    Hub,
    Plan,
    PullError,
    hub_headers,
    huggingface_hub_module,
    resolve_endpoint,
    translated,
)

MANIFEST = "limner-pull.json"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
SINGLE_FILES = (".safetensors", ".gguf")
DENOISERS = frozenset({"unet", "transformer"})
"""A GGUF file is the denoiser alone: its config repo brings the other components' weights, not these."""


def pull(
    source: str,
    *,
    models_dir: Path,
    name: str | None = None,
    revision: str | None = None,
    variant: str | None = "fp16",
    sha256: str | None = None,
    config_repo: str | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
    allow_http_loopback: bool = False,
) -> PullResult:
    """Pull a hub repo id (``stabilityai/sd-turbo``) or an https URL of one ``.safetensors`` or ``.gguf`` file."""
    endpoint = resolve_endpoint(endpoint)
    if source.startswith(("http://", "https://")):
        single = _url_path(source).endswith(SINGLE_FILES)
        repo = None if single else _repo_from_page_url(source, endpoint)
        if repo is None:
            if revision:
                raise PullError("--revision is for hub repos; a file URL names its revision itself")
            return pull_url(
                source,
                models_dir=models_dir,
                name=name,
                sha256=sha256,
                config_repo=config_repo,
                endpoint=endpoint,
                token=token,
                allow_http_loopback=allow_http_loopback,
            )
        source = repo
    if sha256 or config_repo:
        raise PullError(
            "--sha256 and --config are for a single-file URL; a hub repo brings its own checksums and configs"
        )
    return pull_repo(
        source, models_dir=models_dir, name=name, revision=revision, variant=variant, endpoint=endpoint, token=token
    )


# --- hub repos ---


def pull_repo(
    repo_id: str,
    *,
    models_dir: Path,
    name: str | None = None,
    revision: str | None = None,
    variant: str | None = "fp16",
    endpoint: str | None = None,
    token: str | bool | None = None,
) -> PullResult:
    """Download the diffusers pipeline in ``repo_id`` to ``models_dir/<id>``, verified, and return where it is."""
    endpoint = resolve_endpoint(endpoint)
    if not _REPO_ID.match(repo_id):
        raise PullError(f"{repo_id!r} is neither a hub repo id (owner/name) nor an https URL of a .safetensors file.")
    model_id = check_id(name or repo_id.rsplit("/", 1)[-1].lower())
    stage, final = stage_dir(models_dir, model_id), target_dir(models_dir, model_id)
    hub = Hub(endpoint, token)

    def pipeline() -> Plan:
        plan = hub.plan(repo_id, revision, stage, variant=variant)
        if plan is None:
            raise PullError(
                f"{repo_id} is not a diffusers pipeline (it has no model_index.json); for a single checkpoint pass "
                f"its URL: {endpoint}/{repo_id}/resolve/{revision or 'main'}/<file>.safetensors"
            )
        return plan

    plan, downloaded = pull_plan(hub, repo_id, revision, pipeline, stage, final)
    return pulled(model_id, repo_id, final, plan.commit, downloaded=downloaded, path=final, family=family_for(repo_id))


def pull_plan(
    hub: Hub,
    repo_id: str,
    revision: str | None,
    make_plan: Callable[[], Plan],
    stage: Path,
    final: Path,
    **header: str,
) -> tuple[Plan, bool]:
    """The one path of every hub pull, a model's or a LoRA's: ``make_plan`` picks the files at a commit; unless
    ``final`` already holds exactly those, they are fetched into ``stage`` (unchanged files of the previous pull
    linked, not downloaded again), verified, recorded in the manifest (with ``header``) and swapped in.

    Returns the plan, and whether anything was downloaded."""
    with translated(hub.endpoint, repo_id, revision):
        plan = make_plan()
        if _up_to_date(final, plan):
            shutil.rmtree(stage, ignore_errors=True)
            return plan, False
        _seed_from_previous(final, stage, plan)
        hub.fetch(plan, stage)
    canonicalize(stage, plan.wanted)
    _prune(stage, set(plan.wanted.values()))
    _write_manifest(stage, {"source": repo_id, "endpoint": hub.endpoint, "revision": revision, **header}, plan)
    _install(stage, final)
    return plan, True


def _up_to_date(final: Path, plan: Plan) -> bool:
    """Same commit, same choice of files (a different --variant is not), all present at their recorded sizes."""
    manifest = _read_manifest(final)
    files: dict[str, dict[str, Any]] = manifest.get("files", {})
    sources = {local: info.get("from") for local, info in files.items()}
    if manifest.get("commit") != plan.commit or sources != {local: hub for hub, local in plan.wanted.items()}:
        return False
    return all(
        (final / local).is_file() and (final / local).stat().st_size == info["size"] for local, info in files.items()
    )


def _seed_from_previous(final: Path, stage: Path, plan: Plan) -> None:
    """Hard-link unchanged weights of an earlier pull into the stage, so a new revision fetches only what changed."""
    for local, info in _read_manifest(final).get("files", {}).items():
        hub_path, digest = info.get("from"), info.get("sha256")
        entry = plan.tree.get(hub_path) if hub_path in plan.wanted else None
        target = stage / str(hub_path)
        if entry is None or entry.lfs is None or entry.lfs.sha256 != digest or target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(final / local, target)
        except OSError:
            continue  # no hard links here: the file is simply downloaded again


def _prune(stage: Path, keep: set[str]) -> None:
    """Drop huggingface_hub's bookkeeping and anything an earlier attempt left that this pull does not use."""
    shutil.rmtree(stage / ".cache", ignore_errors=True)
    for path in sorted(stage.rglob("*"), reverse=True):
        relative = path.relative_to(stage).as_posix()
        if path.is_file() and relative not in keep and relative != MANIFEST:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def _write_manifest(stage: Path, header: dict[str, Any], plan: Plan) -> None:
    files: dict[str, dict[str, Any]] = {}
    for hub_path, local in sorted(plan.wanted.items(), key=lambda item: item[1]):
        entry = plan.tree[hub_path]
        digest = {"sha256": entry.lfs.sha256} if entry.lfs is not None else {"git_sha1": entry.blob_id}
        files[local] = {"from": hub_path, "size": (stage / local).stat().st_size, **digest}
    _save_manifest(stage, {**header, "commit": plan.commit, "files": files})


def pulled(
    model_id: str, source: str, final: Path, commit: str, *, downloaded: bool, path: Path, family: Family | None
) -> PullResult:
    """What a hub pull installed in ``final``, as its manifest records it; ``path`` is what the catalog points at."""
    files = _read_manifest(final).get("files", {})
    return PullResult(
        model_id=model_id,
        source=source,
        path=path.resolve(),
        files=len(files),
        size=sum(int(info["size"]) for info in files.values()),
        commit=commit,
        downloaded=downloaded,
        family=family,
    )


# --- single files ---


def pull_url(
    url: str,
    *,
    models_dir: Path,
    name: str | None = None,
    sha256: str | None = None,
    config_repo: str | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
    allow_http_loopback: bool = False,
) -> PullResult:
    """Download one ``.safetensors`` checkpoint or ``.gguf`` denoiser (resumable, checksummed) plus, if known, a
    config directory for it.

    The diffusers engine loads a single file offline only with a ``config_dir`` of component configs, so one is
    fetched from ``config_repo``, or from the file's own hub repo when the URL is a hub ``/resolve/`` URL. A GGUF
    file holds the denoiser only, so its config directory also gets the other components' weights.
    """
    endpoint = resolve_endpoint(endpoint)
    filename = PurePosixPath(_url_path(url)).name
    if not filename.endswith(SINGLE_FILES):
        raise PullError(
            f"{url} is not a .safetensors or .gguf file; pickled .ckpt/.bin checkpoints can run code when loaded."
        )
    gguf = filename.endswith(".gguf")
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise PullError("--sha256 takes the file's sha256 as 64 hexadecimal characters.")
    if url.startswith("http://") and not (allow_http_loopback and is_loopback_url(url)):
        raise PullError(f"refusing plain http for {url}: use https, so the file cannot be swapped on the way.")
    model_id = check_id(name or filename.removesuffix(".gguf").removesuffix(".safetensors").lower())
    stage, final = stage_dir(models_dir, model_id), target_dir(models_dir, model_id)
    hub_file = _hub_file(url, endpoint)
    huggingface_hub_module(online=hub_file is not None)
    previous = _read_manifest(final)
    if _same_file(previous, final / filename, url, sha256, config_repo):
        config = final / "config"
        config_dir = config if config.is_dir() else None
        return _single_result(model_id, url, final / filename, previous, config_dir, [], downloaded=False)
    stage.mkdir(parents=True, exist_ok=True)
    headers = hub_headers(token) if hub_file else {}
    try:
        done = download_url(url, stage / filename, expected_sha256=sha256, headers=headers)
    except DownloadError as exc:
        raise PullError(str(exc) if exc.reached else f"{exc}. {OFFLINE_HINT}") from exc
    notes = [] if done.verified else [f"no checksum was published for {filename}: compare sha256 {done.sha256}"]
    explicit = config_repo is not None  # an explicit --config must work; the file's own repo may not be a pipeline
    config_repo = config_repo or (hub_file[0] if hub_file else None)
    config_dir = None
    if config_repo:
        config_dir = _pull_configs(config_repo, stage / "config", endpoint, token, required=explicit, weights=gguf)
    if config_dir is None:
        notes.append("no config directory: pass --config <diffusers repo of the same architecture> to load offline")
    elif gguf:
        notes.append("a GGUF file is the denoiser alone: config/ holds the other components' weights")
    for leftover in stage.iterdir():  # an earlier attempt under this id, for another URL
        if leftover.is_dir() and leftover.name != "config":
            shutil.rmtree(leftover)
        elif leftover.is_file() and leftover.name != filename:
            leftover.unlink()
    _write_single_manifest(stage, url, filename, done.sha256, config_repo if config_dir else None)
    _install(stage, final)
    manifest = _read_manifest(final)
    config_dir = final / "config" if config_dir else None
    return _single_result(model_id, url, final / filename, manifest, config_dir, notes, downloaded=True)


def _same_file(manifest: dict[str, Any], path: Path, url: str, sha256: str | None, config_repo: str | None) -> bool:
    """Whether an earlier pull already holds this URL's file (and the asked-for configs): then nothing is fetched."""
    recorded = manifest.get("files", {}).get(path.name, {})
    return (
        manifest.get("source") == url
        and path.is_file()
        and path.stat().st_size == recorded.get("size")
        and (sha256 is None or sha256.lower() == recorded.get("sha256"))
        and (config_repo is None or manifest.get("config") == config_repo)
    )


def _single_result(
    model_id: str,
    url: str,
    path: Path,
    manifest: dict[str, Any],
    config_dir: Path | None,
    notes: list[str],
    *,
    downloaded: bool,
) -> PullResult:
    recorded = manifest.get("files", {}).get(path.name, {})
    return PullResult(
        model_id=model_id,
        source=url,
        path=path.resolve(),
        files=1,
        size=path.stat().st_size,
        config_dir=config_dir.resolve() if config_dir else None,
        sha256=recorded.get("sha256"),
        downloaded=downloaded,
        family=family_for(path.name, str(manifest.get("config") or "")),
        notes=notes,
    )


def _pull_configs(
    repo_id: str, target: Path, endpoint: str, token: str | bool | None, *, required: bool, weights: bool = False
) -> Path | None:
    """Fetch only the configs and tokenizers of ``repo_id`` (a few hundred KB) for ``from_single_file``; with
    ``weights``, also every component's weights but the denoiser's (what a GGUF denoiser needs beside it)."""
    hub = Hub(endpoint, token)
    with translated(endpoint, repo_id, None):
        plan = hub.plan(repo_id, None, target, weights=weights, without_weights=DENOISERS, variant="fp16")
        if plan is None:
            if required:
                raise PullError(f"--config {repo_id} is not a diffusers pipeline (it has no model_index.json)")
            return None
        hub.fetch(plan, target)
    canonicalize(target, plan.wanted)  # fp16 weights under the plain names, as a pulled directory has them
    shutil.rmtree(target / ".cache", ignore_errors=True)
    return target


def _write_single_manifest(stage: Path, url: str, filename: str, digest: str, config_repo: str | None) -> None:
    files = {filename: {"size": (stage / filename).stat().st_size, "sha256": digest}}
    _save_manifest(stage, {"source": url, "config": config_repo, "files": files})


def check_id(model_id: str) -> str:
    if not _ID.match(model_id) or ".." in model_id:
        raise PullError(f"{model_id!r} cannot be a model id: use letters, digits, '.', '_' and '-' (--name ID)")
    return model_id


# --- shared helpers ---


def stage_dir(models_dir: Path, model_id: str) -> Path:
    return models_dir / f".{model_id}.partial"


def target_dir(models_dir: Path, model_id: str) -> Path:
    """``models_dir/<id>``, refused if something not made by ``limner pull`` is there: a pull replaces it whole."""
    target = models_dir / model_id
    if target.exists() and not (target / MANIFEST).is_file():
        raise PullError(f"{target} exists and was not made by limner pull; remove it or choose another --name")
    return target


def _install(stage: Path, final: Path) -> None:
    """Swap the verified stage in for the previous version in (nearly) one step."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    stage.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _save_manifest(stage: Path, manifest: dict[str, Any]) -> None:
    """What a pull fetched and from where: how the next pull of the same id knows what it can keep."""
    (stage / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _read_manifest(directory: Path) -> dict[str, Any]:
    try:
        data = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _url_path(url: str) -> str:
    from urllib.parse import unquote, urlsplit

    return unquote(urlsplit(url).path)


def _repo_from_page_url(url: str, endpoint: str) -> str | None:
    """``https://huggingface.co/owner/name`` (a repo page) means the repo, not a file."""
    if not url.startswith(endpoint + "/"):
        return None
    parts = url[len(endpoint) + 1 :].strip("/").split("/")
    return "/".join(parts) if len(parts) == 2 and _REPO_ID.match("/".join(parts)) else None


def _hub_file(url: str, endpoint: str) -> tuple[str, str, str] | None:
    """``(repo_id, revision, filename)`` for ``<endpoint>/<owner>/<name>/resolve/<rev>/<file>``, else None."""
    if not url.startswith(endpoint + "/"):
        return None
    parts = _url_path(url[len(endpoint) :]).strip("/").split("/")
    if len(parts) < 5 or parts[2] != "resolve":
        return None
    return f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])
