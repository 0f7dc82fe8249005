"""Where delivered images live: a small store interface and a local-filesystem implementation.

Images are content-addressed (``sha256(bytes) + extension``), so storing the same bytes twice is a
no-op and a key can never point at different content. Each key has a JSON sidecar naming the
consumers that own it. Writes are atomic (:func:`limner.core.files.write_atomically`):
a crash leaves either the old state or the new one, never a half-written file under a real name.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from limner.core.errors import InvalidRequest, LimnerError, NotFound
from limner.core.files import write_atomically

logger = logging.getLogger(__name__)

EXTENSION_BY_MIME: dict[str, str] = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}
MIME_BY_EXTENSION: dict[str, str] = {ext: mime for mime, ext in EXTENSION_BY_MIME.items()}
KEY_RE = re.compile(r"^[0-9a-f]{64}\.(png|jpg|webp)$")
"""The only keys a store accepts; anything else (``..``, slashes, NULs) is simply not found."""


def content_key(data: bytes, mime_type: str) -> str:
    """The content address of ``data``: its sha256 hex digest plus the extension for ``mime_type``."""
    try:
        extension = EXTENSION_BY_MIME[mime_type]
    except KeyError:
        raise InvalidRequest(f"cannot store media of type {mime_type!r}; use PNG, JPEG or WebP") from None
    return hashlib.sha256(data).hexdigest() + extension


def is_valid_key(key: str) -> bool:
    return isinstance(key, str) and KEY_RE.fullmatch(key) is not None


def mime_type_for(key: str) -> str:
    """The MIME type a key's extension stands for (the key must be valid)."""
    return MIME_BY_EXTENSION["." + key.rsplit(".", 1)[1]]


class MediaStore(ABC):
    """Write-once, content-addressed image storage, owned by the consumers who made each image.

    To implement one: map ``put``/``get``/``owners``/``exists``/``delete`` onto the backend, refuse
    keys that fail ``is_valid_key`` with ``NotFound``, and never put backend paths or bucket names
    in error messages.
    """

    @abstractmethod
    async def put(self, data: bytes, *, mime_type: str, owner: str) -> str:
        """Store ``data`` (idempotent) and record ``owner``; return its key."""

    @abstractmethod
    async def get(self, key: str) -> bytes:
        """The stored bytes; ``NotFound`` if the key is invalid or absent."""

    @abstractmethod
    async def owners(self, key: str) -> set[str]:
        """The consumers that stored these bytes; ``NotFound`` if the key is invalid or absent."""

    @abstractmethod
    async def exists(self, key: str) -> bool:
        """Whether the key names stored media (invalid keys simply do not exist)."""

    @abstractmethod
    async def delete(self, key: str, *, owner: str | None = None) -> None:
        """Forget ``owner``'s claim, removing the media once nobody owns it; all of it when ``owner`` is None."""

    async def aclose(self) -> None:
        """Release backend resources; nothing to do for most stores."""
        return None

    def presigned_url(self, key: str) -> str | None:
        """A link the backend itself serves (an S3 presigned URL), where it has such links; else None."""
        return None

    def key_in_url(self, url: str) -> str | None:
        """The key behind one of :meth:`presigned_url`'s links, so limner reads it instead of fetching it."""
        return None


def not_found(key: str) -> NotFound:
    """The error for a key that is not stored; it names the key only when the key is well formed."""
    # Echo the key only when it is a well-formed one: never reflect arbitrary input or paths.
    return NotFound(f"no media with key {key}" if is_valid_key(key) else "no media with that key")


class LocalMediaStore(MediaStore):
    """Files under ``root``, sharded by the first two byte pairs of the hash: ``root/3f/a9/<key>``.

    Sidecar updates are serialised within this process; replicas sharing one directory may race on
    the owner list (several replicas should use an S3-compatible store instead).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()

    def _path(self, key: str) -> Path:
        if not is_valid_key(key):
            raise not_found(key)
        return self.root / key[:2] / key[2:4] / key

    @staticmethod
    def _sidecar(path: Path) -> Path:
        return path.with_name(path.name + ".json")

    async def put(self, data: bytes, *, mime_type: str, owner: str) -> str:
        key = content_key(data, mime_type)
        await asyncio.to_thread(self._put_sync, self._path(key), data, owner)
        return key

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise not_found(key) from None
        except OSError as exc:
            logger.error("media store could not read %s: %s", key, exc)
            raise LimnerError("the media store could not read the image") from exc

    async def owners(self, key: str) -> set[str]:
        path = self._path(key)
        if not await asyncio.to_thread(path.is_file):
            raise not_found(key)
        meta = await asyncio.to_thread(self._read_meta, self._sidecar(path))
        return set(meta.get("owners", []))

    async def exists(self, key: str) -> bool:
        if not is_valid_key(key):
            return False
        return await asyncio.to_thread(self._path(key).is_file)

    async def delete(self, key: str, *, owner: str | None = None) -> None:
        path = self._path(key)
        if not await asyncio.to_thread(self._delete_sync, path, owner):
            raise not_found(key)

    # -- blocking helpers, run in worker threads -------------------------------------------------

    def _put_sync(self, path: Path, data: bytes, owner: str) -> None:
        try:
            if not path.is_file():  # concurrent writers of one key write the same bytes: the last one harmlessly wins
                write_atomically(path, data)
            with self._lock:
                sidecar = self._sidecar(path)
                meta = self._read_meta(sidecar)
                owners = set(meta.get("owners", []))
                if owner in owners and "created" in meta:
                    return
                meta.setdefault("created", time.time())
                meta["owners"] = sorted(owners | {owner})
                write_atomically(sidecar, json.dumps(meta, sort_keys=True).encode())
        except OSError as exc:
            logger.error("media store could not write %s: %s", path.name, exc)
            raise LimnerError("the media store could not write the image") from exc

    def _delete_sync(self, path: Path, owner: str | None) -> bool:
        sidecar = self._sidecar(path)
        with self._lock:
            if not path.is_file():
                return False
            if owner is not None:
                meta = self._read_meta(sidecar)
                owners = set(meta.get("owners", []))
                if owner not in owners:
                    return False
                owners.discard(owner)
                if owners:
                    meta["owners"] = sorted(owners)
                    write_atomically(sidecar, json.dumps(meta, sort_keys=True).encode())
                    return True
            # Data first: a crash in between leaves an orphan sidecar, never unowned visible media.
            path.unlink(missing_ok=True)
            sidecar.unlink(missing_ok=True)
            return True

    @staticmethod
    def _read_meta(sidecar: Path) -> dict[str, Any]:
        try:
            meta = json.loads(sidecar.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.warning("media store ignoring unreadable sidecar %s: %s", sidecar.name, exc)
            return {}
        return meta if isinstance(meta, dict) else {}
