"""Credits: balances and a ledger. Reserve before work, commit on success, refund on failure.

Each step is one database transaction (reservations of concurrent requests may share one, ``reserve_many``),
and the only way credits leave a balance is

    UPDATE consumers SET balance = balance - :cost WHERE id = :id AND balance >= :cost

so however many requests race (threads, processes, replicas), the database lets exactly as many
through as the balance covers and never overdraws. A reservation is a row naming the server process
that holds it (its lease, ``limner.accounts.leases``) and an expiry: if that process dies mid-request,
``recover`` (run at startup and periodically by every replica) refunds it as soon as the process is
known dead, and at the latest when it expires. Its state moves ``held`` -> ``committed`` | ``refunded``
| ``expired`` by conditional updates, so a reservation is settled exactly once even if two replicas
race to recover it.

A consumer whose balance is NULL is not metered (no reservation, no ledger rows); granting credits to
it starts metering. ``LEDGER.delta`` always sums to the balance of a metered consumer.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, bindparam, func, insert, or_, select, update
from sqlalchemy.orm import Session

from limner.accounts import consumers, pending
from limner.accounts.cache import bump
from limner.accounts.db import Database
from limner.accounts.models import MAX_MICROS, MICROS, Consumer, LedgerEntry, Reservation, from_micros, utcnow
from limner.core.errors import InsufficientCredits, InvalidRequest

log = logging.getLogger(__name__)

_RESERVATIONS = cast(Table, Reservation.__table__)
_LEDGER = cast(Table, LedgerEntry.__table__)
_CONSUMERS = cast(Table, Consumer.__table__)

# The statements of every metered request, built once: building and keying one costs more than running it.
_TAKE = (
    update(_CONSUMERS)
    .where(
        _CONSUMERS.c.id == bindparam("consumer_id"),
        _CONSUMERS.c.balance.is_not(None),
        _CONSUMERS.c.balance >= bindparam("amount"),
    )
    .values(balance=_CONSUMERS.c.balance - bindparam("amount"))
    .returning(_CONSUMERS.c.balance)
)
"""Take ``amount`` from a metered balance that covers it; the balance after, or no row."""
_COMMIT = (
    update(_RESERVATIONS)
    .where(_RESERVATIONS.c.id.in_(bindparam("ids", expanding=True)), _RESERVATIONS.c.state == "held")
    .values(state="committed", settled_at=bindparam("settled_at"))
    .returning(_RESERVATIONS.c.id)
)
"""Commit the holds among ``ids`` still held; their ids."""
_ADD_RESERVATIONS = insert(_RESERVATIONS)
_ADD_ENTRIES = insert(_LEDGER)
"""Reservations and charges are written as plain rows (Core statements), not ORM objects: on the request
path and in every usage batch, the unit of work's bookkeeping cost more than the statements."""


@dataclass(frozen=True)
class Hold:
    """Credits reserved for one request."""

    id: str
    consumer_id: int
    amount: int


def _credits(micros: int | None) -> str:
    return "unlimited" if micros is None else f"{micros / MICROS:g}"


def grant(db: Database, consumer: str, amount: int, *, note: str = "") -> int:
    """Add ``amount`` micro-credits (negative takes some back, never below zero); the new balance.

    Granting to an unmetered consumer starts metering it, from a balance of ``amount``. An amount that
    rounds to zero micro-credits is refused rather than silently starting to meter from a balance of 0."""
    if amount == 0:
        raise InvalidRequest(
            f"A grant must move at least {1 / MICROS:f} credits: this one rounds to 0.", param="amount"
        )
    with db.write() as session:
        row = consumers.find(session, consumer)
        current = func.coalesce(Consumer.balance, 0)
        if amount > 0 and (row.balance or 0) + amount > MAX_MICROS:
            raise InvalidRequest(
                f"{consumer}'s balance cannot exceed {MAX_MICROS // MICROS:,} credits.", param="amount"
            )
        after = session.execute(
            update(Consumer)
            .where(Consumer.id == row.id, current + amount >= 0, current + amount <= MAX_MICROS)
            .values(balance=current + amount)
            .returning(Consumer.balance)
            .execution_options(synchronize_session=False)
        ).scalar_one_or_none()
        if after is None:
            if amount > 0:
                raise InvalidRequest(
                    f"{consumer}'s balance cannot exceed {MAX_MICROS // MICROS:,} credits.", param="amount"
                )
            raise InvalidRequest(
                f"{consumer} has {_credits(row.balance or 0)} credits; cannot take {_credits(-amount)}.",
                param="amount",
            )
        if row.balance is None:
            bump(session)  # metered from now on: cached policies must learn it
        session.add(
            LedgerEntry(
                consumer_id=row.id,
                created_at=utcnow(),
                kind="grant",
                delta=amount,
                amount=abs(amount),
                balance_after=after,
                note=note[:200],
            )
        )
        return int(after)


def set_unmetered(db: Database, consumer: str) -> None:
    """Stop metering: the balance becomes NULL (unlimited), recorded as an ``unmeter`` ledger row."""
    with db.write() as session:
        row = consumers.find(session, consumer)
        if row.balance is not None:
            bump(session)
            session.add(
                LedgerEntry(
                    consumer_id=row.id,
                    created_at=utcnow(),
                    kind="unmeter",
                    delta=-row.balance,
                    amount=row.balance,
                    balance_after=None,
                    note="balance removed: unlimited from now on",
                )
            )
        row.balance = None


def balance(db: Database, consumer: str) -> int | None:
    with db.read() as session:
        return consumers.find(session, consumer).balance


def ledger(db: Database, consumer: str, *, limit: int = 50) -> list[LedgerEntry]:
    pending.flush_pending(db)  # charges this process still batches
    with db.read() as session:
        row = consumers.find(session, consumer)
        return list(
            session.scalars(
                select(LedgerEntry)
                .where(LedgerEntry.consumer_id == row.id)
                .order_by(LedgerEntry.id.desc())
                .limit(limit)
            )
        )


@dataclass(frozen=True)
class Ask:
    """One request's reservation, waiting to be written (``reserve_many``)."""

    consumer_id: int
    amount: int
    model: str
    request_id: str
    ttl: float
    instance_id: str | None = None


def reserve(
    db: Database,
    consumer_id: int,
    amount: int,
    *,
    model: str,
    request_id: str,
    ttl: float,
    instance_id: str | None = None,
    now: datetime | None = None,
) -> Hold:
    """Take ``amount`` off the balance and hold it, or raise ``InsufficientCredits`` (402) changing nothing."""
    outcome = reserve_many(db, [Ask(consumer_id, amount, model, request_id, ttl, instance_id)], now=now)[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def reserve_many(db: Database, asks: list[Ask], *, now: datetime | None = None) -> list[Hold | Exception]:
    """Reserve for several requests in one transaction: for each, a ``Hold`` or the error it would raise alone.

    Each reservation is the same conditional ``UPDATE`` as one alone, so a batch never lets through more
    than the balance covers; one that is short gets ``InsufficientCredits`` and the others go ahead. Rows
    are written in one statement per table. If the transaction itself fails (a consumer deleted meanwhile,
    a deadlock), each reservation is retried in its own, so one request's failure is never another's."""
    now = now or utcnow()
    try:
        with db.write() as session:
            return _reserve_rows(session, asks, now)
    except Exception as exc:
        if len(asks) == 1:
            return [exc]
    outcomes: list[Hold | Exception] = []
    for ask in asks:
        try:
            with db.write() as session:
                outcomes.extend(_reserve_rows(session, [ask], now))
        except Exception as exc:
            outcomes.append(exc)
    return outcomes


def _reserve_rows(session: Session, asks: list[Ask], now: datetime) -> list[Hold | Exception]:
    outcomes: list[Hold | Exception] = [InvalidRequest("not reserved")] * len(asks)
    reservations: list[dict[str, object]] = []
    entries: list[dict[str, object]] = []
    balances = _CONSUMERS.c
    for index, after in _take(session, asks):
        ask = asks[index]
        if after is None:
            current = session.scalar(select(balances.balance).where(balances.id == ask.consumer_id))
            outcomes[index] = InsufficientCredits(
                f"Insufficient credits for image generation: this request costs {_credits(ask.amount)} credits "
                f"and the balance is {_credits(current)}.",
                required=ask.amount / MICROS,
                balance=from_micros(current),
            )
            continue
        hold = Hold(secrets.token_hex(16), ask.consumer_id, ask.amount)
        outcomes[index] = hold
        model, request_id = ask.model[:200], ask.request_id[:80]
        reservations.append(
            {
                "id": hold.id,
                "consumer_id": ask.consumer_id,
                "amount": ask.amount,
                "instance_id": ask.instance_id,
                "model": model,
                "request_id": request_id,
                "state": "held",
                "created_at": now,
                "expires_at": now + timedelta(seconds=ask.ttl),
                "settled_at": None,
            }
        )
        entries.append(
            {
                "consumer_id": ask.consumer_id,
                "created_at": now,
                "kind": "reserve",
                "delta": -ask.amount,
                "amount": ask.amount,
                "balance_after": after,
                "reservation_id": hold.id,
                "request_id": request_id,
                "note": model,
            }
        )
    if reservations:
        session.execute(_ADD_RESERVATIONS, reservations)
        session.execute(_ADD_ENTRIES, entries)
    return outcomes


def _take(session: Session, asks: list[Ask]) -> list[tuple[int, int | None]]:
    """Take each ask's amount from its consumer's balance: ``(index, balance after)``, or ``(index, None)``
    when the balance does not cover it. A consumer's asks are taken in one ``UPDATE`` when its balance
    covers them all (each balance after as if taken one by one), else one by one. Balances are taken in
    consumer order, so two batches that touch the same consumers cannot deadlock."""
    groups: dict[int, list[int]] = {}
    for index in sorted(range(len(asks)), key=lambda i: asks[i].consumer_id):
        groups.setdefault(asks[index].consumer_id, []).append(index)
    taken: list[tuple[int, int | None]] = []
    for consumer_id, indexes in groups.items():
        if len(indexes) > 1:
            total = sum(asks[index].amount for index in indexes)
            after = session.execute(_TAKE, {"consumer_id": consumer_id, "amount": total}).scalar_one_or_none()
            if after is not None:
                for index in indexes:
                    total -= asks[index].amount
                    taken.append((index, after + total))
                continue
        for index in indexes:
            parameters = {"consumer_id": consumer_id, "amount": asks[index].amount}
            taken.append((index, session.execute(_TAKE, parameters).scalar_one_or_none()))
    return taken


def _settle(session: Session, hold: Hold, state: str, now: datetime) -> bool:
    """Move a held reservation to ``state``; False if something else settled it first."""
    table = _RESERVATIONS.c
    moved = session.execute(
        update(_RESERVATIONS).where(table.id == hold.id, table.state == "held").values(state=state, settled_at=now)
    )
    return moved.rowcount == 1  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Charge:
    """A delivered request's hold, to be committed (``commit_many``)."""

    hold: Hold
    request_id: str
    moment: datetime


def commit(session: Session, hold: Hold, *, request_id: str, now: datetime | None = None) -> bool:
    """Mark the held credits as spent (inside the caller's transaction). False: it had expired and was
    refunded by recovery, so the request is not charged (never twice, never for more than was held)."""
    return hold.id in commit_many(session, [Charge(hold, request_id, now or utcnow())])


def commit_many(session: Session, charges: list[Charge]) -> set[str]:
    """``commit`` for several holds in two statements (one conditional ``UPDATE ... RETURNING``, one
    multi-row insert): the ids of the holds committed; the others had been refunded first and are not charged."""
    if not charges:
        return set()
    settled = max(charge.moment for charge in charges)
    ids = [charge.hold.id for charge in charges]
    committed = set(session.scalars(_COMMIT, {"ids": ids, "settled_at": settled}))
    entries = []
    for charge in charges:
        if charge.hold.id not in committed:
            log.warning("reservation %s was settled before its request finished; not charging it", charge.hold.id)
            continue
        entries.append(
            {
                "consumer_id": charge.hold.consumer_id,
                "created_at": charge.moment,
                "kind": "charge",
                "delta": 0,
                "amount": charge.hold.amount,
                "balance_after": None,
                "reservation_id": charge.hold.id,
                "request_id": charge.request_id[:80],
                "note": "",
            }
        )
    if entries:
        session.execute(_ADD_ENTRIES, entries)
    return committed


def refund(
    session: Session,
    hold: Hold,
    *,
    kind: str = "refund",
    request_id: str | None = None,
    now: datetime | None = None,
    note: str = "",
) -> bool:
    """Give held credits back (inside the caller's transaction); False if already settled."""
    now = now or utcnow()
    if not _settle(session, hold, "expired" if kind == "expire" else "refunded", now):
        return False
    after = session.execute(
        update(Consumer)
        .where(Consumer.id == hold.consumer_id)
        .values(balance=Consumer.balance + hold.amount)
        .returning(Consumer.balance)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    session.add(
        LedgerEntry(
            consumer_id=hold.consumer_id,
            created_at=now,
            kind=kind,
            delta=hold.amount if after is not None else 0,
            amount=hold.amount,
            balance_after=after,
            reservation_id=hold.id,
            request_id=request_id[:80] if request_id else None,
            note=note[:200],
        )
    )
    return True


def recover_expired(db: Database, now: datetime | None = None, *, batch: int = 500) -> int:
    """Refund reservations past their expiry (a request that never finished); how many were recovered."""
    return recover(db, [], now, batch=batch)


def recover(db: Database, dead: list[str], now: datetime | None = None, *, batch: int = 500) -> int:
    """Refund held reservations of the ``dead`` instances, whatever their age, and any past their expiry.

    Each refund is its own conditional transaction, so a reservation committed or refunded meanwhile
    (by its request, or by another replica recovering too) is left alone. How many were recovered."""
    now = now or utcnow()
    expired = Reservation.expires_at < now
    gone = or_(Reservation.instance_id.in_(dead), expired) if dead else expired
    recovered = 0
    while True:
        with db.read() as session:
            rows = session.execute(
                select(
                    Reservation.id,
                    Reservation.consumer_id,
                    Reservation.amount,
                    Reservation.request_id,
                    Reservation.instance_id,
                    Reservation.expires_at,
                )
                .where(Reservation.state == "held", gone)
                .limit(batch)
            ).all()
        settled = 0
        for row in rows:
            note = (
                f"its server process ({row.instance_id}) stopped before the request finished"
                if row.instance_id in dead
                else "reservation expired: its request never finished"
            )
            with db.write() as session:
                if refund(
                    session,
                    Hold(row.id, row.consumer_id, row.amount),
                    kind="expire",
                    request_id=row.request_id,
                    now=now,
                    note=note,
                ):
                    settled += 1
        recovered += settled
        if len(rows) < batch or settled == 0:
            break
    if recovered:
        log.warning("refunded %d credit reservation(s) left by stopped or expired requests", recovered)
    return recovered
