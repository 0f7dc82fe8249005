"""Instance leases: a dead server's credit holds are refunded at once, whatever their age; a live one's
never. Each test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import multiprocessing
import os
import signal
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from limner.accounts import consumers, credits, leases, tokens
from limner.accounts.models import MICROS, Instance, LedgerEntry, Reservation, to_micros, utcnow
from limner.accounts.service import Accounts


def metered(accounts: Accounts, balance: float = 10) -> int:
    tokens.create_token(accounts.db, "alice")
    credits.grant(accounts.db, "alice", to_micros(balance))
    cid = consumers.policy(accounts.db, "alice").consumer_id
    assert cid is not None
    return cid


def hold_in_child(url: str, lock_dir: str, consumer_id: int, ready: multiprocessing.synchronize.Event) -> None:
    """Another server process: take a lease, hold 3 credits, then wait to be killed."""
    from limner.accounts.db import Database

    db = Database(url)
    lease = leases.register(db, Path(lock_dir))
    credits.reserve(db, consumer_id, to_micros(3), model="p", request_id="req_child", ttl=3600, instance_id=lease.id)
    ready.set()
    signal.pause()


def test_a_killed_process_holds_are_refunded_at_once_whatever_their_age(accounts: Accounts, tmp_path: Path) -> None:
    cid = metered(accounts)
    ready = multiprocessing.get_context("spawn").Event()
    child = multiprocessing.get_context("spawn").Process(
        target=hold_in_child, args=(accounts.db.url, str(tmp_path), cid, ready), daemon=True
    )
    child.start()
    try:
        assert ready.wait(30)
        assert credits.balance(accounts.db, "alice") == 7 * MICROS
        assert leases.dead(accounts.db, lease_seconds=600) == [], "alive: its lock is held"
        assert credits.recover(accounts.db, leases.dead(accounts.db, lease_seconds=600)) == 0
    finally:
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
    dead = leases.dead(accounts.db, lease_seconds=600)
    assert len(dead) == 1, "its heartbeat is seconds old, but its lock was dropped by the kernel"
    assert credits.recover(accounts.db, dead) == 1
    assert credits.balance(accounts.db, "alice") == 10 * MICROS
    with accounts.db.read() as session:
        note = session.scalars(select(LedgerEntry.note).where(LedgerEntry.kind == "expire")).one()
        assert note == f"its server process ({dead[0]}) stopped before the request finished"
    leases.forget(accounts.db, dead)
    with accounts.db.read() as session:
        assert session.scalars(select(Instance.id)).all() == []
    assert not list((tmp_path / "instances").iterdir()), "the dead process's lock file is gone too"


def test_a_live_lease_is_never_taken_for_dead(accounts: Accounts, tmp_path: Path) -> None:
    cid = metered(accounts)
    lease = leases.register(accounts.db, tmp_path)
    credits.reserve(accounts.db, cid, to_micros(2), model="p", request_id="r", ttl=3600, instance_id=lease.id)
    assert leases.dead(accounts.db, lease_seconds=60) == []
    assert leases.renew(accounts.db, lease)
    assert credits.recover(accounts.db, leases.dead(accounts.db, lease_seconds=60)) == 0
    assert credits.balance(accounts.db, "alice") == 8 * MICROS
    leases.release(accounts.db, lease)
    assert not lease.lock_path.exists()


def test_a_silent_instance_on_another_host_is_dead_after_the_lease(accounts: Accounts) -> None:
    cid = metered(accounts)
    old = utcnow() - timedelta(seconds=90)
    with accounts.db.write() as session:
        session.add(Instance(id="elsewhere", hostname="far", pid=1, lock_path="", started_at=old, heartbeat_at=old))
    credits.reserve(accounts.db, cid, to_micros(4), model="p", request_id="r", ttl=3600, instance_id="elsewhere")
    assert leases.dead(accounts.db, lease_seconds=120) == [], "within its lease"
    assert leases.dead(accounts.db, lease_seconds=60) == ["elsewhere"]
    assert credits.recover(accounts.db, ["elsewhere"]) == 1
    assert credits.balance(accounts.db, "alice") == 10 * MICROS


def test_a_stopped_instance_is_renewed_no_more(accounts: Accounts, tmp_path: Path) -> None:
    lease = leases.register(accounts.db, tmp_path)
    leases.release(accounts.db, lease)
    assert not leases.renew(accounts.db, lease)
    assert leases.dead(accounts.db, lease_seconds=600) == [lease.id]


def test_a_committed_reservation_is_never_refunded_by_recovery(accounts: Accounts, tmp_path: Path) -> None:
    cid = metered(accounts)
    lease = leases.register(accounts.db, tmp_path)
    hold = credits.reserve(accounts.db, cid, to_micros(2), model="p", request_id="r", ttl=3600, instance_id=lease.id)
    with accounts.db.write() as session:
        assert credits.commit(session, hold, request_id="r")
    leases.release(accounts.db, lease)
    assert credits.recover(accounts.db, [lease.id]) == 0
    assert credits.balance(accounts.db, "alice") == 8 * MICROS
    with accounts.db.read() as session:
        assert session.scalars(select(Reservation.state)).one() == "committed"


async def test_the_server_takes_a_lease_and_stamps_its_holds(accounts: Accounts, tmp_path: Path) -> None:
    cid = metered(accounts)
    await accounts.start(tmp_path)
    assert accounts.instance_id is not None
    hold = credits.reserve(
        accounts.db, cid, MICROS, model="p", request_id="r", ttl=60, instance_id=accounts.instance_id
    )
    with accounts.db.read() as session:
        assert session.get(Reservation, hold.id).instance_id == accounts.instance_id  # type: ignore[union-attr]
    await accounts.heartbeat()
    lock = accounts.lease.lock_path if accounts.lease else None
    await accounts.aclose()
    assert lock is not None and not lock.exists()
