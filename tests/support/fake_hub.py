"""A small fake Hugging Face Hub for ``limner pull`` tests: the HTTP protocol huggingface_hub 2.x speaks, no Xet.

Serve it with ``live_server(hub)``; point ``HF_ENDPOINT`` (or ``--endpoint``) at the URL it yields. What it speaks,
as read from huggingface_hub 2.4's ``hf_api.py`` and ``file_download.py``:

- ``GET /api/models/{owner}/{name}[/revision/{rev}]``: model info; ``sha`` is the commit that pins every download.
  Unknown repos and revisions answer 404 with ``X-Error-Code: RepoNotFound`` / ``RevisionNotFound``.
- ``GET /api/models/{owner}/{name}/tree/{rev}[/{path}]``: the file listing with sizes, git blob ids (``oid``) and,
  for LFS files, ``lfs.oid`` (sha256): the checksums a client verifies against. One page, no ``Link`` header.
- ``HEAD|GET /{owner}/{name}/resolve/{rev}/{path}``: small files answer 200 with ``ETag`` = git blob id and
  ``X-Repo-Commit``; LFS files answer 302 to a "CDN" on another origin (``localhost`` rather than ``127.0.0.1``)
  with ``X-Linked-Etag`` (sha256) and ``X-Linked-Size``, so huggingface_hub takes the metadata from the redirect
  and downloads from the CDN, as with the real hub. No ``X-Xet-*`` header is ever sent, so Xet is never used.
- ``GET /cdn/{sha256}`` and ``GET /files/{name}`` (plain single-file URLs): the bytes, with ``Range`` (206),
  ``If-Range`` and ``416``.

Faults a test can ask for: ``drop_once`` (send half of a body, then cut the connection, once), ``corrupt``
(same length, wrong bytes, advertised checksums unchanged). ``requests`` logs ``(method, path, Range)``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
LFS_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".onnx", ".msgpack", ".pt", ".pth", ".h5")


class _CutConnection(Exception):
    """Raised mid-body: uvicorn then closes the socket, and the client sees a short body."""


@dataclass
class FakeRepo:
    files: dict[str, bytes]
    commit: str = ""

    def __post_init__(self) -> None:
        digest = hashlib.sha1(json.dumps(sorted((p, _sha256(b)) for p, b in self.files.items())).encode())
        self.commit = self.commit or digest.hexdigest()


@dataclass
class FakeHub:
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)  # served at /files/{name}
    linked_sha256: dict[str, str] = field(default_factory=dict)  # /files/{name} -> X-Linked-Etag, like hub URLs
    drop_once: set[str] = field(default_factory=set)  # repo paths or /files names
    corrupt: set[str] = field(default_factory=set)
    cdn_host: str = "localhost"
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)

    def add_repo(self, repo_id: str, files: dict[str, bytes]) -> FakeRepo:
        repo = self.repos[repo_id] = FakeRepo(dict(files))
        return repo

    def fetched(self, fragment: str) -> list[tuple[str, str, str | None]]:
        """Requests whose path contains ``fragment`` (GET only: what was actually transferred)."""
        return [r for r in self.requests if r[0] == "GET" and fragment in r[1]]

    # --- ASGI ---

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        method, path = scope["method"], scope["path"]
        self.requests.append((method, path, headers.get("range")))
        status, out, body, cut = self._route(method, path, headers, scope)
        out.setdefault("Content-Length", str(len(body)))  # also on HEAD: huggingface_hub reads sizes from it
        await send({"type": "http.response.start", "status": status, "headers": _encode(out)})
        if method == "HEAD":
            body = b""
        if cut is not None:
            await send({"type": "http.response.body", "body": body[:cut], "more_body": True})
            raise _CutConnection
        await send({"type": "http.response.body", "body": body})

    def _route(
        self, method: str, path: str, headers: dict[str, str], scope: Scope
    ) -> tuple[int, dict[str, str], bytes, int | None]:
        if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path):
            return self._info(match[1], match[2] or "main")
        if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path):
            return self._tree(match[1], match[2], match[3] or "")
        if match := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            return self._resolve(match[1], match[2], match[3], scope)
        if match := re.fullmatch(r"/cdn/([0-9a-f]{64})", path):
            found = self._blob(match[1])
            if found is None:
                return 404, {}, b"no such blob", None
            name, data = found
            return self._bytes(name, data, headers, {"ETag": f'"{match[1]}"'})
        if match := re.fullmatch(r"/files/(.+)", path):
            if match[1] not in self.files:
                return 404, {}, b"not found", None
            data = self.files[match[1]]
            extra = {"ETag": f'"{_sha256(data)}"'}
            if match[1] in self.linked_sha256:
                extra["X-Linked-Etag"] = f'"{self.linked_sha256[match[1]]}"'
            return self._bytes(match[1], data, headers, extra)
        return 404, {}, b"not found", None

    def _info(self, repo_id: str, revision: str) -> tuple[int, dict[str, str], bytes, int | None]:
        repo, error = self._repo(repo_id, revision)
        if repo is None:
            return error
        siblings = [{"rfilename": path} for path in sorted(repo.files)]
        info = {"id": repo_id, "sha": repo.commit, "siblings": siblings, "private": False, "tags": ["diffusers"]}
        return _json(info)

    def _tree(self, repo_id: str, revision: str, under: str) -> tuple[int, dict[str, str], bytes, int | None]:
        repo, error = self._repo(repo_id, revision)
        if repo is None:
            return error
        entries: list[dict[str, Any]] = []
        folders = sorted({"/".join(p.split("/")[:i]) for p in repo.files for i in range(1, p.count("/") + 1)})
        for folder in folders:
            if folder.startswith(under):
                entries.append({"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(), "path": folder})
        for path, data in sorted(repo.files.items()):
            if not path.startswith(under):
                continue
            entry: dict[str, Any] = {"type": "file", "oid": _git_blob_id(data), "size": len(data), "path": path}
            if path.endswith(LFS_SUFFIXES):
                entry["lfs"] = {"oid": _sha256(data), "size": len(data), "pointerSize": 134}
            entries.append(entry)
        return _json(entries)

    def _resolve(
        self, repo_id: str, revision: str, path: str, scope: Scope
    ) -> tuple[int, dict[str, str], bytes, int | None]:
        repo, error = self._repo(repo_id, revision)
        if repo is None:
            return error
        if path not in repo.files:
            return 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": repo.commit}, b"entry not found", None
        data = repo.files[path]
        if path.endswith(LFS_SUFFIXES):
            digest = _sha256(data)
            port = scope["server"][1]
            headers = {
                "Location": f"http://{self.cdn_host}:{port}/cdn/{digest}",
                "X-Linked-Etag": f'"{digest}"',
                "X-Linked-Size": str(len(data)),
                "X-Repo-Commit": repo.commit,
                "ETag": f'"{_git_blob_id(data)}"',
            }
            return 302, headers, b"", None
        served = self._maybe_corrupt(path, data)
        return 200, {"ETag": f'"{_git_blob_id(data)}"', "X-Repo-Commit": repo.commit}, served, None

    def _bytes(
        self, name: str, data: bytes, headers: dict[str, str], extra: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes, int | None]:
        """Serve ``data`` honouring Range/If-Range, with the faults configured for ``name``."""
        served = self._maybe_corrupt(name, data)
        out = {"Accept-Ranges": "bytes", **extra}
        start = 0
        wanted = re.fullmatch(r"bytes=(\d+)-", headers.get("range", ""))
        if wanted and headers.get("if-range", extra.get("ETag")) == extra.get("ETag"):
            start = int(wanted[1])
            if start >= len(served):
                return 416, {**out, "Content-Range": f"bytes */{len(served)}"}, b"", None
            out["Content-Range"] = f"bytes {start}-{len(served) - 1}/{len(served)}"
        body = served[start:]
        cut = None
        if name in self.drop_once:
            self.drop_once.discard(name)
            cut = len(body) // 2
        return (206 if "Content-Range" in out else 200), out, body, cut

    def _maybe_corrupt(self, name: str, data: bytes) -> bytes:
        if name not in self.corrupt or not data:
            return data
        middle = len(data) // 2
        return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]

    def _blob(self, digest: str) -> tuple[str, bytes] | None:
        for repo in self.repos.values():
            for path, data in repo.files.items():
                if _sha256(data) == digest:
                    return path, data
        return None

    def _repo(self, repo_id: str, revision: str) -> tuple[FakeRepo | None, Any]:
        repo = self.repos.get(repo_id)
        if repo is None:
            return None, (404, {"X-Error-Code": "RepoNotFound"}, b"Repository not found", None)
        if revision not in ("main", repo.commit):
            return None, (404, {"X-Error-Code": "RevisionNotFound"}, b"Revision not found", None)
        return repo, None


def _json(value: Any) -> tuple[int, dict[str, str], bytes, int | None]:
    return 200, {"Content-Type": "application/json"}, json.dumps(value).encode(), None


def _encode(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(key.lower().encode(), value.encode()) for key, value in headers.items()]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
