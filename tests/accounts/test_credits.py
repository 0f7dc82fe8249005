"""Credits: grants, reserve/commit/refund as single transactions, no overdraft under real concurrency,
and recovery of reservations a dead process left behind. Each test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from limner.accounts import consumers, credits
from limner.accounts.credits import Hold
from limner.accounts.models import MICROS, Consumer, LedgerEntry, Reservation, to_micros, utcnow
from limner.accounts.service import Accounts
from limner.core.errors import InsufficientCredits, InvalidRequest, NotFound


def metered(accounts: Accounts, name: str, credits_: float) -> int:
    consumers.create_consumer(accounts.db, name)
    credits.grant(accounts.db, name, to_micros(credits_))
    policy = consumers.policy(accounts.db, name)
    assert policy.consumer_id is not None
    return policy.consumer_id


def ledger_sum(accounts: Accounts, consumer_id: int) -> int:
    with accounts.db.read() as session:
        total = session.scalar(select(func.sum(LedgerEntry.delta)).where(LedgerEntry.consumer_id == consumer_id))
        return int(total or 0)


def states(accounts: Accounts) -> dict[str, int]:
    with accounts.db.read() as session:
        rows = session.execute(select(Reservation.state, func.count()).group_by(Reservation.state)).all()
    return {state: int(n) for state, n in rows}


def test_grant_starts_metering_and_never_goes_negative(accounts: Accounts) -> None:
    db = accounts.db
    consumers.create_consumer(db, "alice")
    assert credits.balance(db, "alice") is None, "a new consumer is unmetered"
    assert credits.grant(db, "alice", to_micros(10)) == 10 * MICROS
    assert credits.grant(db, "alice", to_micros(0.25)) == to_micros(10.25)
    assert credits.grant(db, "alice", -to_micros(5)) == to_micros(5.25)
    with pytest.raises(InvalidRequest):
        credits.grant(db, "alice", -to_micros(6))
    with pytest.raises(NotFound):
        credits.grant(db, "nobody", 1)
    credits.set_unmetered(db, "alice")
    assert credits.balance(db, "alice") is None
    assert [e.kind for e in credits.ledger(db, "alice")] == ["unmeter", "grant", "grant", "grant"]


def test_reserve_commit_and_refund(accounts: Accounts) -> None:
    db = accounts.db
    cid = metered(accounts, "alice", 1.0)
    hold = credits.reserve(db, cid, to_micros(0.4), model="pattern", request_id="r1", ttl=60)
    assert credits.balance(db, "alice") == to_micros(0.6)
    with db.write() as session:
        assert credits.commit(session, hold, request_id="r1")
    with db.write() as session:
        assert not credits.refund(session, hold), "a committed reservation cannot be refunded"
    assert credits.balance(db, "alice") == to_micros(0.6)

    second = credits.reserve(db, cid, to_micros(0.5), model="pattern", request_id="r2", ttl=60)
    with pytest.raises(InsufficientCredits) as short:
        credits.reserve(db, cid, to_micros(0.2), model="pattern", request_id="r3", ttl=60)
    assert short.value.required == pytest.approx(0.2) and short.value.details["balance"] == pytest.approx(0.1)
    with db.write() as session:
        assert credits.refund(session, second, request_id="r2")
    with db.write() as session:
        assert not credits.refund(session, second), "refunded exactly once"
        assert not credits.commit(session, second, request_id="r2")
    assert credits.balance(db, "alice") == to_micros(0.6)
    assert ledger_sum(accounts, cid) == to_micros(0.6), "the ledger's deltas add up to the balance"
    assert states(accounts) == {"committed": 1, "refunded": 1}


@pytest.mark.parametrize("workers", [50])
def test_fifty_concurrent_reservations_against_ten_credits_take_exactly_ten(accounts: Accounts, workers: int) -> None:
    db = accounts.db
    cid = metered(accounts, "alice", 10)
    start = threading.Barrier(workers)

    def attempt(index: int) -> Hold | None:
        start.wait()
        try:
            return credits.reserve(db, cid, MICROS, model="pattern", request_id=f"r{index}", ttl=60)
        except InsufficientCredits:
            return None

    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(attempt, range(workers)))
    holds = [hold for hold in results if hold is not None]
    assert len(holds) == 10
    assert credits.balance(db, "alice") == 0
    assert ledger_sum(accounts, cid) == 0
    with db.read() as session:
        assert session.scalar(select(Consumer.balance).where(Consumer.id == cid)) == 0


def test_expired_reservations_are_recovered_once(accounts: Accounts) -> None:
    """A process killed mid-request leaves a held reservation; recovery refunds it, exactly once."""
    db = accounts.db
    cid = metered(accounts, "alice", 3)
    past = utcnow() - timedelta(hours=2)
    orphan = credits.reserve(db, cid, to_micros(2), model="pattern", request_id="killed", ttl=60, now=past)
    live = credits.reserve(db, cid, to_micros(1), model="pattern", request_id="running", ttl=3600)
    assert credits.balance(db, "alice") == 0
    assert credits.recover_expired(db) == 1
    assert credits.recover_expired(db) == 0
    assert credits.balance(db, "alice") == to_micros(2)
    with db.write() as session:
        assert not credits.commit(session, orphan, request_id="killed"), "a late finisher is not charged"
        assert credits.commit(session, live, request_id="running")
    assert states(accounts) == {"expired": 1, "committed": 1}
    assert [e.kind for e in credits.ledger(db, "alice")] == ["charge", "expire", "reserve", "reserve", "grant"]
    assert ledger_sum(accounts, cid) == to_micros(2)


def test_unmetered_consumers_are_never_reserved_against(accounts: Accounts) -> None:
    db = accounts.db
    consumers.create_consumer(db, "free")
    policy = consumers.policy(db, "free")
    assert policy.balance is None and policy.consumer_id is not None
    assert consumers.policy(db, "not-in-db") == consumers.Policy(None, None, None, None)
