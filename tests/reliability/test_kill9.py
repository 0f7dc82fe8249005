"""``kill -9`` mid-generation with credits held, then a restart on the same data directory: the holds are
refunded at once (not an hour later), the ledger adds up, the database and media store are intact, and
no temporary file is left behind."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from PIL import Image
from sqlalchemy import func, select

from limner.accounts import credits, tokens
from limner.accounts.models import MICROS, LedgerEntry, Reservation, to_micros
from limner.accounts.service import Accounts
from limner.settings import Settings
from tests.support.accounts import bearer
from tests.support.waiting import wait_until

SLOW = 3
"""Generations in flight when the server is killed."""
STARTUP = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(root: Path) -> Path:
    config = root / "limner.toml"
    config.write_text(
        f'data_dir = "{root / "data"}"\n'
        'default_model = "pattern"\n\n'
        '[[models]]\nid = "pattern"\nengine = "testpattern"\nprice_per_image = 1.0\n\n'
        '[[models]]\nid = "slow"\nengine = "testpattern"\nprice_per_image = 2.0\nmax_queue = 8\n'
        "options = { delay = 120.0 }\n"
    )
    return config


@contextmanager
def server(config: Path, log: Path, **env: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``limner serve`` in its own process, as an operator runs it (``env``: more ``LIMNER_*`` settings)."""
    port = free_port()
    environment = {**os.environ, "LIMNER_CONFIG": str(config), **env}
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "limner.cli", "serve", "--port", str(port)], env=environment, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: process.poll() is not None or up(url), timeout=STARTUP, what="the server to start")
        assert process.poll() is None, log.read_text()[-3000:]
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(30)


def up(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def generate(url: str, token: str, model: str) -> httpx.Response:
    body = {"prompt": "a cat", "model": model, "size": "64x64"}
    return httpx.post(url + "/v1/images/generations", json=body, headers=bearer(token), timeout=180)


def held(settings: Settings) -> int:
    accounts = Accounts.open(settings)
    try:
        with accounts.db.read() as session:
            return int(session.scalar(select(func.count()).where(Reservation.state == "held")) or 0)
    finally:
        accounts.db.dispose()


def test_a_killed_server_refunds_its_holds_at_the_next_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path)
    monkeypatch.setenv("LIMNER_CONFIG", str(config))
    settings = Settings()
    accounts = Accounts.open(settings)
    token = tokens.create_token(accounts.db, "alice").token
    credits.grant(accounts.db, "alice", to_micros(20))
    accounts.db.dispose()
    log = tmp_path / "server.log"

    with server(config, log) as (url, process):
        first = generate(url, token, "pattern")
        assert first.status_code == 200, first.text
        media = httpx.URL(first.json()["data"][0]["url"]).raw_path.decode()  # a signed link, valid for an hour
        before = httpx.get(url + media).content
        assert Image.open(io.BytesIO(before)).size == (64, 64)

        threads = [threading.Thread(target=lambda: _ignore(generate, url, token, "slow")) for _ in range(SLOW)]
        for thread in threads:
            thread.start()
        wait_until(lambda: held(settings) == SLOW, timeout=30, what="the slow requests' credits to be held")
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    for thread in threads:
        thread.join(30)
    assert held(settings) == SLOW, "the killed process left its holds behind"
    assert balance(settings) == to_micros(20 - 1 - 2 * SLOW)

    with server(config, log) as (url, _):
        assert held(settings) == 0, "refunded before the first request is served, though the holds are fresh"
        assert balance(settings) == to_micros(19)
        assert httpx.get(url + media).content == before, "the media store kept the image, byte for byte"
        again = generate(url, token, "pattern")
        assert again.status_code == 200
        Image.open(io.BytesIO(httpx.get(again.json()["data"][0]["url"]).content)).verify()

    assert_ledger_consistent(settings, expected=to_micros(18))
    data = settings.data_dir
    with sqlite3.connect(data / "limner.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    leftovers = [p for p in data.rglob("*") if p.is_file() and (p.suffix == ".tmp" or p.name.startswith(".tmp"))]
    assert leftovers == []
    assert list((data / "instances").iterdir()) == [], "the dead instance's lock file was cleared, and ours too"


def _ignore(call: Callable[..., object], *args: object) -> None:
    """A request in flight when its server dies: the client sees a broken connection, nothing more."""
    with contextlib.suppress(httpx.HTTPError):
        call(*args)


def balance(settings: Settings) -> int | None:
    accounts = Accounts.open(settings)
    try:
        return credits.balance(accounts.db, "alice")
    finally:
        accounts.db.dispose()


def assert_ledger_consistent(settings: Settings, *, expected: int) -> None:
    """Every reservation settled once; the ledger's deltas add up to the balance."""
    accounts = Accounts.open(settings)
    try:
        with accounts.db.read() as session:
            deltas = session.scalar(select(func.sum(LedgerEntry.delta)))
            states = dict(session.execute(select(Reservation.state, func.count()).group_by(Reservation.state)).all())
            settlements = session.execute(
                select(LedgerEntry.reservation_id, func.count())
                .where(LedgerEntry.kind.in_(["charge", "refund", "expire"]))
                .group_by(LedgerEntry.reservation_id)
            ).all()
        assert credits.balance(accounts.db, "alice") == expected == deltas
        assert states == {"committed": 2, "expired": SLOW}
        assert sorted(count for _, count in settlements) == [1] * (2 + SLOW)
        assert expected == to_micros(20) - 2 * MICROS
    finally:
        accounts.db.dispose()
