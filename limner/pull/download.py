"""One file over HTTPS, resumable and checked: the transfer under ``limner pull <URL of a .safetensors/.gguf file>``.

Why not huggingface_hub here: a plain URL (a mirror, a release page, a bucket) is not a hub repo, and
huggingface_hub deletes a partial file when a run fails, while a multi-gigabyte checkpoint should survive a cut
connection *and* a killed process. So the bytes go to ``<file>.part`` with the server's validator beside it in
``<file>.part.json``; the next attempt (in this run, after a dropped connection, or in a later run) asks for the
rest with ``Range`` + ``If-Range`` and starts over only if the server's copy changed. A finished file must match
the expected sha256 (``--sha256``, or the hub's ``X-Linked-Etag`` for hub URLs) and parse as safetensors (or GGUF), so
an HTML login page or a truncated body never becomes a model.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from limner.core.files import write_atomically

CHUNK = 1 << 20
RETRIES = 5  # attempts in a row that bring no new byte before giving up
MAX_HEADER = 100 << 20  # safetensors' own limit on the JSON header
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class DownloadError(Exception):
    """A failed transfer; ``reached`` says whether the server answered at all (else: no network)."""

    def __init__(self, message: str, *, reached: bool = True) -> None:
        super().__init__(message)
        self.reached = reached


class _Transient(Exception):
    """A server answer worth retrying (429, 5xx)."""


@dataclass(frozen=True)
class Downloaded:
    path: Path
    size: int
    sha256: str
    verified: bool  # checked against an expected sha256 (not only computed)


def download_url(
    url: str,
    dest: Path,
    *,
    expected_sha256: str | None = None,
    headers: dict[str, str] | None = None,
    progress: bool = True,
    retries: int = RETRIES,
    backoff: float = 1.0,
) -> Downloaded:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify it and move it into place."""
    part, meta_path = dest.with_name(dest.name + ".part"), dest.with_name(dest.name + ".part.json")
    meta = _read_meta(meta_path, url)
    expected = (expected_sha256 or "").lower() or None
    attempt = idle = 0
    client = httpx.Client(follow_redirects=True, timeout=httpx.Timeout(30.0, read=120.0), headers=headers or {})
    with client:
        while True:
            before = _size(part)
            try:
                if _fetch(client, url, part, meta, meta_path, progress):
                    break
            except (httpx.TransportError, _Transient) as exc:
                if attempt == 0 and isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
                    raise DownloadError(f"could not reach {_origin(url)}: no network ({exc})", reached=False) from exc
                idle = 0 if _size(part) > before else idle + 1
                if idle >= retries:
                    raise DownloadError(
                        f"the connection to {_origin(url)} kept failing ({exc}); run the same command again to resume"
                    ) from exc
                time.sleep(backoff * idle)
            attempt += 1
    published = meta.get("linked_sha256")
    if expected is None and isinstance(published, str):
        expected = published
    digest = sha256_file(part)
    if expected is not None and digest != expected:
        part.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
        raise DownloadError(
            f"sha256 mismatch for {dest.name}: expected {expected}, got {digest}; the download was deleted "
            "(check the expected checksum, then run again)"
        )
    try:
        check_gguf(part) if dest.suffix == ".gguf" else check_safetensors(part)
    except DownloadError as exc:
        part.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
        raise DownloadError(f"{dest.name}: {exc}; the download was deleted") from exc
    size = part.stat().st_size
    part.replace(dest)
    meta_path.unlink(missing_ok=True)
    return Downloaded(path=dest, size=size, sha256=digest, verified=expected is not None)


def _fetch(client: httpx.Client, url: str, part: Path, meta: dict[str, Any], meta_path: Path, progress: bool) -> bool:
    """One request for whatever is still missing; True when ``part`` holds the whole file."""
    have = _size(part)
    request_headers = {"Accept-Encoding": "identity"}
    if have:
        request_headers["Range"] = f"bytes={have}-"
        if meta.get("validator"):
            request_headers["If-Range"] = meta["validator"]
    with client.stream("GET", url, headers=request_headers) as response:
        if urlsplit(url).scheme == "https" and response.url.scheme != "https":
            raise DownloadError(f"{url} redirected to {response.url.scheme}://, refusing to downgrade")
        if response.status_code == 416 and have:  # nothing left to send: either complete, or our part is bogus
            total = _total_from_range(response.headers.get("Content-Range"))
            if total == have:
                return True
            part.unlink()
            return False
        if response.status_code == 429 or response.status_code >= 500:
            raise _Transient(f"{_origin(url)} answered {response.status_code}")
        if response.status_code >= 400:
            raise DownloadError(f"{_origin(url)} answered {response.status_code} for {url}")
        resumed = response.status_code == 206 and _range_start(response.headers.get("Content-Range")) == have
        total = (
            _total_from_range(response.headers.get("Content-Range"))
            if resumed
            else _int(response.headers.get("Content-Length"))
        )
        meta.update(_validators(response))
        write_atomically(meta_path, json.dumps(meta).encode())
        with (
            part.open("ab" if resumed else "wb") as sink,
            _bar(part.name.removesuffix(".part"), total, have if resumed else 0, progress) as bar,
        ):
            for chunk in response.iter_bytes():
                sink.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size != total:
        raise httpx.RemoteProtocolError(f"got {size} of {total} bytes")
    return True


def check_safetensors(path: Path) -> None:
    """Raise :class:`DownloadError` unless ``path`` is a complete safetensors file (header parses, sizes add up)."""
    size = path.stat().st_size
    with path.open("rb") as source:
        head = source.read(8)
        if len(head) < 8:
            raise DownloadError("not a safetensors file (shorter than its 8-byte header length)")
        (length,) = struct.unpack("<Q", head)
        if length > MAX_HEADER or 8 + length > size:
            raise DownloadError("not a safetensors file (its header length is impossible)")
        try:
            header = json.loads(source.read(length))
        except ValueError as exc:
            raise DownloadError("not a safetensors file (its header is not JSON)") from exc
    if not isinstance(header, dict):
        raise DownloadError("not a safetensors file (its header is not a JSON object)")
    end = 0
    for name, tensor in header.items():
        if name == "__metadata__":
            continue
        offsets = tensor.get("data_offsets") if isinstance(tensor, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and 0 <= offsets[0] <= offsets[1]):
            raise DownloadError(f"not a safetensors file (tensor {name!r} has no valid data_offsets)")
        end = max(end, offsets[1])
    if 8 + length + end != size:
        raise DownloadError(f"truncated or padded safetensors file ({size} bytes, header says {8 + length + end})")


def check_gguf(path: Path) -> None:
    """Raise :class:`DownloadError` unless the ``gguf`` package reads ``path`` whole (header, tensor table, data)."""
    with path.open("rb") as source:
        if source.read(4) != b"GGUF":
            raise DownloadError("not a GGUF file (it does not start with GGUF)")
    try:
        from gguf import GGUFReader

        GGUFReader(path)
    except ImportError as exc:
        raise DownloadError("a GGUF file is read with the gguf package: pip install 'limner[local]'") from exc
    except Exception as exc:  # the reader's own checks: truncated data, impossible offsets, unknown types
        raise DownloadError(f"truncated or damaged GGUF file ({type(exc).__name__}: {exc})") from exc


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _validators(response: httpx.Response) -> dict[str, Any]:
    """What to send as ``If-Range`` next time, and the hub's sha256 of the file (``X-Linked-Etag``) if given."""
    found: dict[str, Any] = {}
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        found["validator"] = etag
    elif response.headers.get("Last-Modified"):
        found["validator"] = response.headers["Last-Modified"]
    for hop in (*response.history, response):
        linked = hop.headers.get("X-Linked-Etag", "").strip('"').lower()
        if _SHA256.match(linked):
            found["linked_sha256"] = linked
    return found


def _read_meta(path: Path, url: str) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"url": url}
    if not isinstance(meta, dict) or meta.get("url") != url:
        path.with_name(path.name.removesuffix(".json")).unlink(missing_ok=True)  # bytes of another URL: start over
        return {"url": url}
    return meta


def _bar(name: str, total: int | None, initial: int, enabled: bool) -> Any:
    from huggingface_hub.utils import tqdm  # honours HF_HUB_DISABLE_PROGRESS_BARS, like the hub downloads

    return tqdm(
        total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=name, disable=not enabled
    )


def _range_start(content_range: str | None) -> int | None:
    match = re.match(r"bytes (\d+)-\d+/", content_range or "")
    return int(match[1]) if match else None


def _total_from_range(content_range: str | None) -> int | None:
    match = re.search(r"/(\d+)$", content_range or "")
    return int(match[1]) if match else None


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
