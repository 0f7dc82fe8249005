"""Credits: balances and a ledger. Reserve before work, commit on success, refund on failure.

Each step is one database transaction, and the only way credits leave a balance is

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

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from limner.accounts import consumers, pending
from limner.accounts.cache import bump
from limner.accounts.db import Database
from limner.accounts.models import MAX_MICROS, MICROS, Consumer, LedgerEntry, Reservation, from_micros, utcnow
from limner.core.errors import InsufficientCredits, InvalidRequest

log = logging.getLogger(__name__)


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
    now = now or utcnow()
    with db.write() as session:
        after = session.execute(
            update(Consumer)
            .where(Consumer.id == consumer_id, Consumer.balance.is_not(None), Consumer.balance >= amount)
            .values(balance=Consumer.balance - amount)
            .returning(Consumer.balance)
            .execution_options(synchronize_session=False)
        ).scalar_one_or_none()
        if after is None:
            current = session.scalar(select(Consumer.balance).where(Consumer.id == consumer_id))
            raise InsufficientCredits(
                f"Insufficient credits for image generation: this request costs {_credits(amount)} credits "
                f"and the balance is {_credits(current)}.",
                required=amount / MICROS,
                balance=from_micros(current),
            )
        hold = Hold(secrets.token_hex(16), consumer_id, amount)
        session.add(
            Reservation(
                id=hold.id,
                consumer_id=consumer_id,
                amount=amount,
                instance_id=instance_id,
                model=model[:200],
                request_id=request_id[:80],
                state="held",
                created_at=now,
                expires_at=now + timedelta(seconds=ttl),
            )
        )
        session.add(
            LedgerEntry(
                consumer_id=consumer_id,
                created_at=now,
                kind="reserve",
                delta=-amount,
                amount=amount,
                balance_after=after,
                reservation_id=hold.id,
                request_id=request_id[:80],
                note=model[:200],
            )
        )
    return hold


def _settle(session: Session, hold: Hold, state: str, now: datetime) -> bool:
    """Move a held reservation to ``state``; False if something else settled it first."""
    moved = session.execute(
        update(Reservation)
        .where(Reservation.id == hold.id, Reservation.state == "held")
        .values(state=state, settled_at=now)
        .execution_options(synchronize_session=False)
    )
    return moved.rowcount == 1  # type: ignore[attr-defined]


def commit(session: Session, hold: Hold, *, request_id: str, now: datetime | None = None) -> bool:
    """Mark the held credits as spent (inside the caller's transaction). False: it had expired and was
    refunded by recovery, so the request is not charged (never twice, never for more than was held)."""
    now = now or utcnow()
    if not _settle(session, hold, "committed", now):
        log.warning("reservation %s was settled before its request finished; not charging it", hold.id)
        return False
    session.add(
        LedgerEntry(
            consumer_id=hold.consumer_id,
            created_at=now,
            kind="charge",
            delta=0,
            amount=hold.amount,
            reservation_id=hold.id,
            request_id=request_id[:80],
        )
    )
    return True


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
