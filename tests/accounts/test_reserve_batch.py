"""Reservations written together (``credits.reserve_many`` and the gate's ``Reservations`` queue) keep every
guarantee of one alone: never more held than the balance covers, a short request refused (402) without
stopping the others, and one request's failing write never another's. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from sqlalchemy import event, select

from limner.accounts import credits
from limner.accounts.credits import Ask, Hold
from limner.accounts.models import LedgerEntry, Reservation, to_micros
from limner.accounts.service import Accounts
from limner.core.errors import InsufficientCredits
from limner.service.accounting import Reservations
from tests.accounts.test_credits import ledger_sum, metered, states


def ask(consumer_id: int, credits_: float, request_id: str) -> Ask:
    return Ask(consumer_id, to_micros(credits_), model="pattern", request_id=request_id, ttl=60)


def test_a_batch_holds_what_each_balance_covers_and_refuses_the_rest(accounts: Accounts) -> None:
    db = accounts.db
    alice, bob = metered(accounts, "alice", 1.0), metered(accounts, "bob", 0.5)
    asks = [
        ask(alice, 0.4, "a1"),
        ask(bob, 0.4, "b1"),
        ask(alice, 0.4, "a2"),
        ask(alice, 0.4, "a3"),
        ask(bob, 0.4, "b2"),
    ]
    outcomes = credits.reserve_many(db, asks)
    held = [type(outcome).__name__ for outcome in outcomes]
    assert held == ["Hold", "Hold", "Hold", "InsufficientCredits", "InsufficientCredits"]
    refused = outcomes[3]
    assert isinstance(refused, InsufficientCredits)
    assert (refused.status, refused.code) == (402, "insufficient_credits")
    assert refused.message == (
        "Insufficient credits for image generation: this request costs 0.4 credits and the balance is 0.2."
    )
    assert credits.balance(db, "alice") == to_micros(0.2)
    assert credits.balance(db, "bob") == to_micros(0.1)
    assert ledger_sum(accounts, alice) == to_micros(0.2) and ledger_sum(accounts, bob) == to_micros(0.1)
    assert states(accounts) == {"held": 3}
    with db.read() as session:
        rows = session.execute(select(Reservation.request_id, Reservation.amount, Reservation.state)).all()
        after = session.scalars(
            select(LedgerEntry.balance_after).where(LedgerEntry.kind == "reserve").order_by(LedgerEntry.id)
        ).all()
    assert sorted(rows) == [
        ("a1", to_micros(0.4), "held"),
        ("a2", to_micros(0.4), "held"),
        ("b1", to_micros(0.4), "held"),
    ]
    assert sorted(value or 0 for value in after) == [to_micros(0.1), to_micros(0.2), to_micros(0.6)], (
        "each row: the balance after it"
    )
    hold = outcomes[0]
    assert isinstance(hold, Hold)
    with db.write() as session:
        assert credits.commit(session, hold, request_id="a1")
    assert states(accounts) == {"held": 2, "committed": 1}


def test_a_failing_write_in_a_batch_fails_only_its_own_request(accounts: Accounts) -> None:
    db = accounts.db
    alice = metered(accounts, "alice", 1.0)
    outcomes = credits.reserve_many(db, [ask(alice, 0.3, "a1"), ask(999_999, 0.1, "ghost"), ask(alice, 0.3, "a2")])
    assert isinstance(outcomes[0], Hold) and isinstance(outcomes[2], Hold)
    assert isinstance(outcomes[1], InsufficientCredits), "no such consumer: no balance to take from"
    assert credits.balance(db, "alice") == to_micros(0.4)
    assert states(accounts) == {"held": 2}


async def test_concurrent_requests_share_transactions_and_never_overdraw(accounts: Accounts) -> None:
    alice = metered(accounts, "alice", 1.0)
    queue = Reservations(accounts)
    futures = [queue.ask(ask(alice, 0.1, f"r{i}")) for i in range(25)]
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    holds = [outcome for outcome in outcomes if isinstance(outcome, Hold)]
    refused = [outcome for outcome in outcomes if isinstance(outcome, InsufficientCredits)]
    assert (len(holds), len(refused)) == (10, 15)
    assert all(error.status == 402 for error in refused)
    assert credits.balance(accounts.db, "alice") == 0
    assert ledger_sum(accounts, alice) == 0
    assert queue.writing is None and queue.waiting == [], "the queue is idle once every request has its answer"
    bob = metered(accounts, "bob", 0.5)  # and it keeps serving afterwards
    assert isinstance(await queue.ask(ask(bob, 0.5, "b1")), Hold)


def test_a_consumer_whose_balance_covers_the_whole_batch_is_charged_in_one_take(accounts: Accounts) -> None:
    """One ``UPDATE`` for the batch, and the ledger as if each ask had been taken alone, in order."""
    db = accounts.db
    alice = metered(accounts, "alice", 2.0)
    statements: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        outcomes = credits.reserve_many(db, [ask(alice, 0.5, "a1"), ask(alice, 0.25, "a2"), ask(alice, 0.75, "a3")])
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    assert [type(outcome).__name__ for outcome in outcomes] == ["Hold", "Hold", "Hold"]
    assert sum(statement.lstrip().upper().startswith("UPDATE CONSUMERS") for statement in statements) == 1
    assert credits.balance(db, "alice") == to_micros(0.5)
    with db.read() as session:
        after = session.execute(
            select(LedgerEntry.request_id, LedgerEntry.balance_after).where(LedgerEntry.kind == "reserve")
        ).all()
    assert sorted(after) == [("a1", to_micros(1.5)), ("a2", to_micros(1.25)), ("a3", to_micros(0.5))]
