"""An answer given before the request body was read (a 413, a 401 before the upload) reaches a client
that writes its whole body before reading: the rest of the body is read and discarded, within bounds,
before the connection closes."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from limner.accounts import tokens
from limner.accounts.service import Accounts
from limner.app import create_app
from limner.cli.serve import UVICORN_OPTIONS
from limner.http.linger import DrainUnreadBody
from limner.http.wire import HttpProtocol
from limner.settings import Settings
from tests.support.live_server import live_server

LIMIT = 2**20
OVER = 8 * 2**20
"""Far more than a socket's buffers hold: without the drain, the client's writes meet a reset."""


@pytest.fixture
def served(settings: Settings) -> Iterator[str]:
    """The app under uvicorn as ``limner serve`` runs it, with a 1 MiB JSON cap."""
    chosen = settings.with_overrides(allowed_hosts=None, max_json_bytes=LIMIT)
    with live_server(create_app(chosen), http=HttpProtocol, **UVICORN_OPTIONS) as url:
        yield url


def post(url: str, data: bytes | Iterator[bytes]) -> tuple[int, dict[str, Any]]:
    """POST with ``urllib``, which sends ``Connection: close`` and writes the whole body before reading."""
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def chunks(total: int) -> Iterator[bytes]:
    """A body with no ``Content-Length`` (chunked): the cap is passed while it streams in."""
    yield b'{"prompt": "'
    for _ in range(total // 2**16):
        yield b"a" * 2**16
    yield b'"}'


@pytest.mark.parametrize("chunked", [False, True], ids=["declared length", "chunked"])
def test_urllib_reads_the_413_for_a_body_over_the_cap(served: str, chunked: bool) -> None:
    body = b'{"prompt": "' + b"a" * OVER + b'"}'
    status, answer = post(served + "/v1/images/generations", chunks(OVER) if chunked else body)
    assert status == 413
    assert answer == {
        "error": {
            "message": f"Request body too large: JSON bodies are limited to {LIMIT} bytes.",
            "type": "invalid_request_error",
            "param": None,
            "code": "payload_too_large",
        }
    }


def test_urllib_reads_a_401_given_before_the_upload(settings: Settings) -> None:
    """Authentication answers before the body is read: the same drain lets the client read why."""
    accounts = Accounts.open(settings)
    try:
        tokens.create_token(accounts.db, "alice")
    finally:
        accounts.db.dispose()
    with live_server(
        create_app(settings.with_overrides(allowed_hosts=None)), http=HttpProtocol, **UVICORN_OPTIONS
    ) as url:
        status, answer = post(url + "/v1/images/generations", b'{"prompt": "' + b"a" * OVER + b'"}')
    assert status == 401
    assert answer == {
        "error": {
            "message": "Missing bearer token: send the header 'Authorization: Bearer <token>'.",
            "type": "invalid_request_error",
            "param": None,
            "code": "missing_api_key",
        }
    }


# --- the bounds, straight through the ASGI middleware ---------------------------------------------------

ANSWER = b'{"error": "too large"}'


async def answer_unread(scope: Any, receive: Any, send: Any) -> None:
    """An app that refuses the request without reading its body."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": ANSWER})


async def answer_after_reading(scope: Any, receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    await answer_unread(scope, receive, send)


def scope(*headers: tuple[bytes, bytes]) -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": "/", "headers": [(b"content-length", b"999999999"), *headers]}


async def run(app: Any, receive: Any, request: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(request or scope(), receive, send)
    return sent


async def test_the_answer_leaves_first_and_the_drain_stops_at_its_byte_bound() -> None:
    pulled = 0

    async def endless() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"x" * 2**16, "more_body": True}

    sent = await run(DrainUnreadBody(answer_unread, max_bytes=2**20), endless)
    assert pulled == 16, "1 MiB in 64 KiB chunks, then the connection is given up"
    start, body, end = sent
    assert start["status"] == 413 and (b"connection", b"close") in start["headers"]
    assert (body["body"], body["more_body"]) == (ANSWER, True), "the whole answer before the drain"
    assert (end["body"], end["more_body"]) == (b"", False)


async def test_a_stalled_client_is_given_up_at_the_time_bound() -> None:
    never = asyncio.Event()

    async def stalled() -> dict[str, Any]:
        await never.wait()
        raise AssertionError("unreachable")

    sent = await run(DrainUnreadBody(answer_unread, max_seconds=0), stalled)
    assert [message.get("more_body", False) for message in sent[1:]] == [True, False]


async def test_the_drain_ends_with_the_body_or_the_client() -> None:
    messages = iter(
        [
            {"type": "http.request", "body": b"x", "more_body": True},
            {"type": "http.request", "body": b"y", "more_body": False},
        ]
    )

    async def finite() -> dict[str, Any]:
        return next(messages)

    sent = await run(DrainUnreadBody(answer_unread), finite)
    assert next(messages, None) is None and sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}

    async def gone() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    assert len(await run(DrainUnreadBody(answer_unread), gone)) == 3


async def test_a_body_read_to_its_end_or_never_sent_is_not_drained() -> None:
    async def one() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    read = await run(DrainUnreadBody(answer_after_reading), one)
    assert read == await run(answer_after_reading, one), "untouched"

    async def unexpected() -> dict[str, Any]:
        raise AssertionError("a client waiting for 100 Continue has sent no body")

    waiting = await run(DrainUnreadBody(answer_unread), unexpected, scope((b"expect", b"100-continue")))
    assert waiting == await run(answer_unread, unexpected)
