"""When a request is charged: only after its whole, successful response has been sent."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import MutableMapping
from typing import Any

from sqlalchemy import select

from limner.accounts.models import MICROS, Reservation
from limner.settings import Settings
from tests.accounts.helpers import balance, make_app, provision, usage_rows

BODY = json.dumps({"prompt": "a cat", "model": "pattern", "size": "64x64", "response_format": "b64_json"}).encode()


def scope(token: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/images/generations",
        "raw_path": b"/v1/images/generations",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(BODY)).encode()),
            (b"authorization", f"Bearer {token}".encode()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


def states(app: Any) -> list[str]:
    with app.state.limner.accounts.db.read() as session:
        return list(session.scalars(select(Reservation.state)))


async def test_the_charge_is_committed_after_the_response_went_out(priced: Settings) -> None:
    token = provision(priced, "alice", balance=5)
    app = make_app(priced)
    seen_at_send: list[list[str]] = []
    sent: list[MutableMapping[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            await asyncio.Event().wait()  # the client stays connected: nothing more arrives
        delivered = True
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            seen_at_send.append(states(app))
        sent.append(message)

    await app(scope(token), receive, send)
    assert sent[0]["status"] == 200
    assert seen_at_send == [["held"]], "while the response is written, the credits are only held"
    assert states(app) == ["committed"]
    assert balance(app, "alice") == 4 * MICROS
    [row] = usage_rows(app)
    assert (row.status, row.cost) == (200, MICROS)


async def test_a_response_that_cannot_be_written_is_not_charged(priced: Settings) -> None:
    """The connection breaks while the images are written (as when the process dies there): refunded."""
    token = provision(priced, "alice", balance=5)
    app = make_app(priced)
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            await asyncio.Event().wait()  # the client stays connected: nothing more arrives
        delivered = True
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body":
            raise OSError("connection reset while writing the response")

    with contextlib.suppress(OSError):
        await app(scope(token), receive, send)
    assert states(app) == ["refunded"]
    assert balance(app, "alice") == 5 * MICROS
    [row] = usage_rows(app)
    assert (row.status, row.error_code, row.cost) == (499, "client_closed", 0)
