"""Usage rows written in batches off the request path: nothing lost on a clean stop, readers see every row."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from limner.accounts import consumers, credits, usage
from limner.accounts.models import Reservation, UsageRecord, to_micros
from limner.accounts.service import Accounts
from limner.settings import Settings


def event(index: int, consumer: str = "alice") -> usage.UsageEvent:
    return usage.UsageEvent(
        request_id=f"req-{index}",
        consumer=consumer,
        token_id=None,
        model="pattern",
        dialect="openai",
        images=1,
        pixels=64 * 64,
        seconds=0.01,
        cost=0,
        status=200,
        error_code=None,
    )


def stored(accounts: Accounts) -> list[str]:
    """Request ids in the database, read without flushing anything."""
    with accounts.db.read() as session:
        return list(session.scalars(select(UsageRecord.request_id).order_by(UsageRecord.id)))


@pytest.fixture
def server(priced: Settings, database_url: str, tmp_path: Path) -> Iterator[Accounts]:
    """Accounts as a started server holds them, with a timer too long to fire during a test."""
    opened = Accounts.open(priced.with_overrides(database_url=database_url, usage_flush_seconds=3600))
    yield opened
    opened.db.dispose()


async def test_rows_wait_in_memory_until_flushed_in_order(server: Accounts, tmp_path: Path) -> None:
    await server.start(tmp_path)
    try:
        for index in range(3):
            await server.record_usage(event(index))
        assert stored(server) == [] and server.usage is not None and server.usage.pending == 3
        assert server.flush_usage() == 3
        assert stored(server) == ["req-0", "req-1", "req-2"]
        assert server.flush_usage() == 0
    finally:
        await server.aclose()


async def test_stopping_writes_every_row_still_held(server: Accounts, tmp_path: Path) -> None:
    await server.start(tmp_path)
    for index in range(5):
        await server.record_usage(event(index))
    await server.aclose()  # what the server's shutdown (SIGTERM included) runs
    assert stored(server) == [f"req-{index}" for index in range(5)]


async def test_readers_in_the_process_flush_first(server: Accounts, tmp_path: Path) -> None:
    await server.start(tmp_path)
    try:
        await server.record_usage(event(1, "alice"))
        await server.record_usage(event(2, "bob"))
        [summary] = usage.summary(server.db, consumer="bob")
        assert (summary.consumer, summary.requests, summary.pixels) == ("bob", 1, 64 * 64)
        assert [record.request_id for record in usage.records(server.db)] == ["req-2", "req-1"]
    finally:
        await server.aclose()


async def test_a_full_batch_wakes_the_writer(priced: Settings, database_url: str, tmp_path: Path) -> None:
    from tests.support.waiting import until

    accounts = Accounts.open(priced.with_overrides(database_url=database_url, usage_flush_seconds=3600))
    await accounts.start(tmp_path)
    try:
        assert accounts.usage is not None
        for index in range(accounts.usage.batch):
            await accounts.record_usage(event(index))
        await until(lambda: len(stored(accounts)) == accounts.usage.batch, what="the batch to be written")  # type: ignore[union-attr]
    finally:
        await accounts.aclose()
        accounts.db.dispose()


async def test_a_failed_write_keeps_the_rows_for_the_next_one(
    server: Accounts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await server.start(tmp_path)
    try:
        await server.record_usage(event(1))
        real = server.db.write

        def refusing() -> object:
            raise RuntimeError("database is locked")

        monkeypatch.setattr(server.db, "write", refusing)
        with pytest.raises(RuntimeError, match="database is locked"):
            server.flush_usage()
        monkeypatch.setattr(server.db, "write", real)
        await server.record_usage(event(2))
        assert server.flush_usage() == 2
        assert stored(server) == ["req-1", "req-2"]
    finally:
        await server.aclose()


async def test_a_full_buffer_holds_the_request_until_it_is_written(server: Accounts, tmp_path: Path) -> None:
    await server.start(tmp_path)
    try:
        assert server.usage is not None
        server.usage.max_pending = 4
        for index in range(4):
            await server.record_usage(event(index))
        assert len(stored(server)) == 4, "the fourth row waited for the write instead of growing the buffer"
    finally:
        await server.aclose()


async def test_without_a_started_server_each_row_is_written_at_once(server: Accounts) -> None:
    await server.record_usage(event(7))
    with server.db.read() as session:
        assert session.scalar(select(func.count()).select_from(UsageRecord)) == 1
    assert stored(server) == ["req-7"]


def metered(accounts: Accounts, credits_left: float) -> int:
    consumers.create_consumer(accounts.db, "alice")
    credits.grant(accounts.db, "alice", to_micros(credits_left))
    policy = consumers.policy(accounts.db, "alice")
    assert policy.consumer_id is not None
    return policy.consumer_id


def hold_for(accounts: Accounts, consumer_id: int, request_id: str) -> credits.Hold:
    return credits.reserve(accounts.db, consumer_id, to_micros(1), model="pattern", request_id=request_id, ttl=60)


def charged(index: int) -> usage.UsageEvent:
    return dataclasses.replace(event(index), cost=to_micros(1))


async def test_a_delivered_hold_is_committed_with_its_row_in_the_batch(server: Accounts, tmp_path: Path) -> None:
    consumer_id = metered(server, 5)
    await server.start(tmp_path)
    try:
        hold = hold_for(server, consumer_id, "req-1")
        assert await server.commit_delivered(hold, charged(1))
        assert credits.balance(server.db, "alice") == to_micros(4), "taken at the reservation already"
        with server.db.read() as session:
            assert session.scalar(select(Reservation.state).where(Reservation.id == hold.id)) == "held"
        assert [entry.kind for entry in credits.ledger(server.db, "alice")] == ["charge", "reserve", "grant"]
        with server.db.read() as session:
            assert session.scalar(select(Reservation.state).where(Reservation.id == hold.id)) == "committed"
        [row] = usage.records(server.db)
        assert (row.request_id, row.cost, row.status) == ("req-1", to_micros(1), 200)
    finally:
        await server.aclose()


async def test_a_hold_recovery_refunded_first_is_not_charged(server: Accounts, tmp_path: Path) -> None:
    consumer_id = metered(server, 5)
    await server.start(tmp_path)
    try:
        hold = hold_for(server, consumer_id, "req-1")
        assert await server.commit_delivered(hold, charged(1))
        with server.db.write() as session:
            assert credits.refund(session, hold, kind="expire")  # as recovery does, before the batch is written
        server.flush_usage()
        [row] = usage.records(server.db)
        assert row.cost == 0
        assert credits.balance(server.db, "alice") == to_micros(5)
        assert [entry.kind for entry in credits.ledger(server.db, "alice")] == ["expire", "reserve", "grant"]
    finally:
        await server.aclose()


async def test_a_row_the_database_refuses_alone_is_dropped_and_the_others_written(
    server: Accounts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await server.start(tmp_path)
    try:
        real = usage._write

        def refusing(session: Session, items: list[usage._Pending]) -> None:
            if any(item.row["request_id"] == "req-2" for item in items):
                raise RuntimeError("value too long")
            real(session, items)

        monkeypatch.setattr(usage, "_write", refusing)
        for index in range(1, 4):
            await server.record_usage(event(index))
        assert server.flush_usage() == 2
        assert stored(server) == ["req-1", "req-3"] and server.usage is not None and server.usage.pending == 0
    finally:
        await server.aclose()
