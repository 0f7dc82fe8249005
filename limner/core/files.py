"""Writing a file so that no reader, and no crash, ever sees half of it.

The bytes go to a temporary file in the same directory, are flushed to disk, then take the real name in one
step: ``os.replace`` to overwrite, or ``os.link`` to create only if nothing is there yet (two processes that
both create the same file, such as the first start of several workers, then all end up with the first one's).
``make_private`` keeps what only the server should read (the data directory, its database, the signing key)
from every other user of the machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

PRIVATE_FILE = 0o600
PRIVATE_DIRECTORY = 0o700


def make_private(path: Path, *, create: Literal["file", "directory"] | None = None) -> None:
    """Leave ``path`` to its owner alone: 0700 for a directory, 0600 for a file, created so if missing
    when ``create`` says what it is (never readable by others, even for an instant: umask may be 022).

    Existing paths are tightened too: a data directory made by an older version was 0755, its database 0644.
    One that cannot be changed (another owner, a read-only mount) is logged, not fatal."""
    if create == "directory":
        path.mkdir(mode=PRIVATE_DIRECTORY, parents=True, exist_ok=True)
    elif create == "file":
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    try:
        current = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if current & 0o077 == 0:
        return
    try:
        os.chmod(path, current & ~0o077)  # the owner's own bits stay: 0644 -> 0600, 0755 -> 0700
    except OSError as exc:
        wanted = PRIVATE_DIRECTORY if path.is_dir() else PRIVATE_FILE
        log.warning("%s is open to other users and could not be made private (%s); chmod %o it", path, exc, wanted)


def write_atomically(path: Path, data: bytes, *, mode: int = 0o600, overwrite: bool = True) -> bool:
    """Put ``data`` at ``path`` whole or not at all; False when ``overwrite`` is off and ``path`` already exists.

    A new file gets ``mode``; a replaced one keeps its own. The parent directory is created if missing.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        if not overwrite:
            return False
        mode = stat.S_IMODE(path.stat().st_mode)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)
        if overwrite:
            os.replace(temporary, path)
        else:
            created = _link(temporary, path)
            os.unlink(temporary)
            if not created:
                return False
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_directory(path.parent)
    return True


def _link(source: str, target: Path) -> bool:
    """Give ``source`` the name ``target`` unless that exists: False when another writer got there first."""
    try:
        os.link(source, target)
    except FileExistsError:
        return False
    return True


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable; not every platform lets a directory be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
