"""Instance leases: which server processes are alive, so a dead one's credit holds are refunded at once.

Each server process registers an ``instances`` row when it starts and renews its ``heartbeat_at``
every few seconds. It also keeps a lock file (``data_dir/instances/<id>.lock``) ``flock``-ed for as
long as it lives: the kernel drops that lock the moment the process dies, even by ``kill -9``.

An instance is dead when any of these holds:

- it stopped cleanly (``stopped_at`` set);
- its heartbeat is older than the lease (``instance_lease_seconds``): the only sign that reaches
  another machine sharing a PostgreSQL database;
- it ran on this host and its lock file can be locked by someone else: it is gone, whatever its
  last heartbeat (what makes a restart after a crash refund the crashed process's holds at once).

``credits.recover`` refunds the held reservations of dead instances, at startup and on every sweep.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO

from sqlalchemy import delete, select, update

from limner.accounts.db import Database
from limner.accounts.models import Instance, Reservation, utcnow

log = logging.getLogger(__name__)


@dataclass
class Lease:
    """This process's registration; ``lock`` is the open, locked file that proves it is alive."""

    id: str
    lock_path: Path
    lock: IO[bytes] | None = field(default=None, repr=False)


def hostname() -> str:
    return socket.gethostname()[:255]


def register(db: Database, lock_dir: Path, now: datetime | None = None) -> Lease:
    """Take a lease for this process: lock a fresh file, then record the instance."""
    now = now or utcnow()
    ident = secrets.token_hex(16)
    lease = Lease(ident, lock_dir / "instances" / f"{ident}.lock")
    lease.lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lease.lock_path, "wb")  # noqa: SIM115 (held open, and locked, for the process's life)
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    lease.lock = handle
    with db.write() as session:
        session.add(
            Instance(
                id=lease.id,
                hostname=hostname(),
                pid=os.getpid(),
                lock_path=str(lease.lock_path),
                started_at=now,
                heartbeat_at=now,
            )
        )
    return lease


def renew(db: Database, lease: Lease, now: datetime | None = None) -> bool:
    """Record a heartbeat; False if the instance was marked stopped (it must not hold credits any more)."""
    with db.write() as session:
        moved = session.execute(
            update(Instance)
            .where(Instance.id == lease.id, Instance.stopped_at.is_(None))
            .values(heartbeat_at=now or utcnow())
            .execution_options(synchronize_session=False)
        )
        return moved.rowcount == 1  # type: ignore[attr-defined]


def release(db: Database, lease: Lease, now: datetime | None = None) -> None:
    """A clean stop: mark the instance stopped, then unlock and remove its file."""
    try:
        with db.write() as session:
            session.execute(
                update(Instance)
                .where(Instance.id == lease.id)
                .values(stopped_at=now or utcnow())
                .execution_options(synchronize_session=False)
            )
    finally:
        if lease.lock is not None:
            lease.lock.close()
            lease.lock = None
        with contextlib.suppress(OSError):
            lease.lock_path.unlink()


def _gone(lock_path: str) -> bool:
    """Whether the process that locked ``lock_path`` has died (the lock can be taken now)."""
    if not lock_path:
        return False
    try:
        with open(lock_path, "rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # still held: alive
            fcntl.flock(handle, fcntl.LOCK_UN)
            return True
    except FileNotFoundError:
        return True  # a lock file is only removed by a clean stop, or with the data directory
    except OSError:
        return False  # unreadable here: leave it to the heartbeat


def dead(db: Database, lease_seconds: float, *, own: str | None = None, now: datetime | None = None) -> list[str]:
    """Ids of instances that are gone (see the module doc); never ``own``."""
    now = now or utcnow()
    stale = now - timedelta(seconds=lease_seconds)
    here = hostname()
    with db.read() as session:
        rows = session.execute(
            select(Instance.id, Instance.hostname, Instance.lock_path, Instance.heartbeat_at, Instance.stopped_at)
        ).all()
    found = []
    for row in rows:
        if row.id == own:
            continue
        if row.stopped_at is not None or row.heartbeat_at < stale or (row.hostname == here and _gone(row.lock_path)):
            found.append(row.id)
    return found


def forget(db: Database, ids: list[str]) -> None:
    """Delete the rows of dead instances that hold no credits any more (recovery refunded them), and
    their lock files: the table stays as small as the number of live processes."""
    if not ids:
        return
    with db.write() as session:
        holding = select(Reservation.instance_id).where(Reservation.state == "held", Reservation.instance_id.in_(ids))
        idle = [ident for ident in ids if ident not in set(session.scalars(holding))]
        paths = session.scalars(select(Instance.lock_path).where(Instance.id.in_(idle))).all()
        session.execute(delete(Instance).where(Instance.id.in_(idle)))
    for path in paths:
        if path and _gone(path):
            with contextlib.suppress(OSError):
                Path(path).unlink()
