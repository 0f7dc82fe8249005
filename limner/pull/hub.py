"""The huggingface_hub side of ``limner pull``: the few hub calls it makes, the checks, and their failures.

Everything that talks to a hub goes through :class:`Hub`, with one endpoint and one token, so a pull never mixes
hubs and tests can aim it at a fake one. huggingface_hub verifies sizes but not contents, so :func:`verify` checks
every fetched file against the hub's own checksums (``HfApi.verify_repo_checksums``: sha256 for LFS files, git
blob ids for the rest) and parses every safetensors header. Foreign exceptions (huggingface_hub's, httpx's,
``OSError``) become one-line :class:`PullError` messages here, at the boundary, never deeper in.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from limner.core.errors import LimnerError
from limner.pull.download import DownloadError, check_safetensors
from limner.pull.files import pipeline_components, select_files

DEFAULT_ENDPOINT = "https://huggingface.co"
OFFLINE_HINT = "Download the model elsewhere and point a catalog entry's path at the directory"


class PullError(LimnerError):
    """A pull that cannot finish; the message is one line: what failed and how to fix it."""

    code = "pull_failed"


def resolve_endpoint(endpoint: str | None) -> str:
    """``--endpoint``, else ``HF_ENDPOINT`` read now (huggingface_hub freezes it at import), else the public hub."""
    return (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


@dataclass(frozen=True)
class Plan:
    """What one pull fetches: a repo pinned to a commit, its listing (the checksums), the files chosen."""

    repo_id: str
    commit: str
    tree: dict[str, Any]  # path -> huggingface_hub RepoFile (size, blob id, LFS sha256)
    wanted: dict[str, str]  # hub path -> local path


class Hub:
    """The few huggingface_hub calls a pull makes, all against one endpoint with one token."""

    def __init__(self, endpoint: str, token: str | bool | None) -> None:
        self.hf = huggingface_hub_module()
        self.endpoint, self.token = endpoint, token
        self.api = self.hf.HfApi(endpoint=endpoint, token=token, library_name="limner")

    def plan(
        self,
        repo_id: str,
        revision: str | None,
        target: Path,
        *,
        variant: str | None = None,
        weights: bool = True,
        without_weights: frozenset[str] = frozenset(),
    ) -> Plan | None:
        """Resolve the commit, list its files, read ``model_index.json``; None if the repo is no pipeline."""
        commit, tree = self.files(repo_id, revision)
        if "model_index.json" not in tree:
            return None
        index = self.hf.hf_hub_download(
            repo_id, "model_index.json", revision=commit, local_dir=target, endpoint=self.endpoint, token=self.token
        )
        try:
            components = pipeline_components(Path(index))
        except ValueError as exc:
            raise PullError(f"{repo_id}'s model_index.json does not parse ({exc})") from exc
        wanted = select_files(tree, components, variant=variant, weights=weights, without_weights=without_weights)
        return Plan(repo_id, commit, tree, wanted)

    def files(self, repo_id: str, revision: str | None) -> tuple[str, dict[str, Any]]:
        """The commit ``revision`` resolves to, and every file at that commit by path."""
        commit = self.api.model_info(repo_id, revision=revision).sha
        if commit is None:
            raise PullError(f"{self.endpoint} gave no commit for {repo_id}; is it a Hugging Face hub?")
        listing = self.api.list_repo_tree(repo_id, recursive=True, revision=commit)
        return commit, {entry.path: entry for entry in listing if isinstance(entry, self.hf.RepoFile)}

    def fetch(self, plan: Plan, target: Path) -> None:
        """Download the planned files into ``target`` (files already there are kept) and verify them all."""
        self.hf.snapshot_download(
            plan.repo_id,
            revision=plan.commit,
            local_dir=target,
            endpoint=self.endpoint,
            token=self.token,
            allow_patterns=[glob.escape(path) for path in plan.wanted],
        )
        verify(self.api, plan, target)


def verify(api: Any, plan: Plan, stage: Path) -> None:
    """Check every file against the hub's checksums; a corrupt file is deleted so a rerun fetches it again."""
    wanted = plan.wanted
    report = api.verify_repo_checksums(plan.repo_id, revision=plan.commit, local_dir=stage)
    missing = [path for path in report.missing_paths if path in wanted]
    bad = [m for m in report.mismatches if m["path"] in wanted]
    for mismatch in bad:
        (stage / mismatch["path"]).unlink(missing_ok=True)
    if bad:
        first = bad[0]
        raise PullError(
            f"checksum mismatch for {first['path']} (expected {first['algorithm']} {first['expected'][:16]}..., got "
            f"{first['actual'][:16]}...){f' and {len(bad) - 1} more file(s)' if len(bad) > 1 else ''}: the download "
            "was corrupted in transit and has been deleted; run the same command again"
        )
    if missing:
        raise PullError(f"{len(missing)} file(s) did not arrive (first: {missing[0]}); run the same command again")
    for path in wanted:
        if path.endswith(".safetensors"):
            try:
                check_safetensors(stage / path)
            except DownloadError as exc:
                (stage / path).unlink(missing_ok=True)
                raise PullError(f"{path}: {exc}; it has been deleted, run the same command again") from exc


def huggingface_hub_module(*, online: bool = True) -> Any:
    """huggingface_hub, or a clear error; ``online`` also honours ``HF_HUB_OFFLINE`` (which is about the hub only).

    The package is a lazy module: a submodule such as ``constants`` is an attribute only once something has
    imported it, so the submodules used here are imported by name.
    """
    try:
        import huggingface_hub
        from huggingface_hub import constants
    except ImportError as exc:
        raise PullError(
            "limner pull needs huggingface_hub (and a pulled model needs diffusers): pip install 'limner[local]'"
        ) from exc
    if online and constants.is_offline_mode():
        raise PullError(f"HF_HUB_OFFLINE is set, so nothing can be downloaded: unset it and run again. {OFFLINE_HINT}")
    return huggingface_hub


def hub_headers(token: str | bool | None) -> dict[str, str]:
    """The hub's auth and user-agent headers, for a file URL on the hub (gated files need the token)."""
    huggingface_hub_module()
    from huggingface_hub.utils import build_hf_headers

    return dict(build_hf_headers(token=token, library_name="limner"))


@contextmanager
def translated(endpoint: str, repo_id: str, revision: str | None) -> Iterator[None]:
    """Turn huggingface_hub and network exceptions into one-line :class:`PullError` messages, at the boundary."""
    try:
        yield
    except PullError:
        raise
    except Exception as exc:
        raise PullError(_hub_message(exc, endpoint, repo_id, revision)) from exc


def _hub_message(exc: Exception, where: str, repo: str, revision: str | None) -> str:
    from huggingface_hub import errors

    if isinstance(exc, errors.OfflineModeIsEnabled):
        return f"HF_HUB_OFFLINE is set, so nothing can be downloaded from {where}: unset it and run again"
    network = _network_error(exc)
    if network == "unreachable":
        return f"could not reach {where}: no network ({_reason(exc)}). {OFFLINE_HINT}"
    if network == "broken":
        return f"the connection to {where} broke off ({_reason(exc)}); run the same command again to resume"
    if isinstance(exc, errors.GatedRepoError):
        return f"{repo} is gated: accept its terms at {where}/{repo}, then log in (hf auth login, or HF_TOKEN)"
    if isinstance(exc, errors.RevisionNotFoundError):
        return f"{repo} has no revision {revision!r} on {where}"
    if isinstance(exc, errors.RepositoryNotFoundError):
        return f"{repo} was not found on {where} (if it is private: hf auth login, or set HF_TOKEN)"
    if isinstance(exc, errors.HfHubHTTPError):
        return f"{where} refused {repo}: {_reason(exc)}"
    if isinstance(exc, OSError) and "Consistency check failed" in str(exc):
        return f"a file of {repo} arrived with the wrong size (connection cut?); run the same command again"
    if isinstance(exc, OSError):
        return f"could not write {repo} to disk: {_reason(exc)}"
    return f"pulling {repo} failed: {_reason(exc)}"


def _network_error(exc: BaseException) -> str | None:
    """'unreachable' (no connection at all), 'broken' (cut mid-transfer) or None, looking through the causes."""
    import httpx

    unreachable: tuple[type[BaseException], ...] = (httpx.ConnectError, httpx.ConnectTimeout)
    broken: tuple[type[BaseException], ...] = (httpx.TransportError,)
    try:
        import httpx2  # huggingface_hub 2.x's HTTP client

        unreachable, broken = (
            (*unreachable, httpx2.ConnectError, httpx2.ConnectTimeout),
            (*broken, httpx2.TransportError),
        )
    except ImportError:
        pass
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, unreachable):
            return "unreachable"
        if isinstance(seen, broken):
            return "broken"
        seen = seen.__cause__ or seen.__context__
    return None


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."
