"""Writing a file so that no reader, and no crash, ever sees half of it.

The bytes go to a temporary file in the same directory, are flushed to disk, then take the real name in one
step: ``os.replace`` to overwrite, or ``os.link`` to create only if nothing is there yet (two processes that
both create the same file, such as the first start of several workers, then all end up with the first one's).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path


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
