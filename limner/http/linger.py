"""Reading the rest of a request body that was answered before it was read (a 413 for its size, a 401
before the upload, a refused Host or Origin), as nginx's lingering close does.

A client that writes its whole body before reading (Python's ``urllib``, many simple HTTP clients) is
still writing when such an answer comes. If the server then closes the connection with the rest of the
body unread, the kernel answers the client's next bytes with a reset, and the client reports "connection
reset" or "broken pipe", never the answer. uvicorn closes right after the response on a connection the
client asked to close (``urllib`` sends ``Connection: close``), and once a response is complete its
``receive()`` only says ``http.disconnect``: the draining has to happen while the server still counts
the response as under way. So ``DrainUnreadBody`` sends the answer's bytes at once (the client has all of
it), reads and discards the rest of the body within ``DRAIN_BYTES`` and ``DRAIN_SECONDS``, and only then
ends the response, which says ``Connection: close`` (a body not read to its end cannot carry a next
request). It is the outermost middleware, so request logs and metrics time the answer, not the drain.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DRAIN_BYTES = 64 * 2**20
"""Most bytes of an unread body read and discarded after the answer; past them the connection is closed."""
DRAIN_SECONDS = 10.0
"""Longest the drain may take (a slow or stalled client); then the connection is closed."""
BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers") or []:
        if key.lower() == name:
            found: bytes = value
            return found
    return None


class DrainUnreadBody:
    """After an answer given before the request body was read to its end, drain the rest (bounded)."""

    def __init__(self, app: ASGIApp, max_bytes: int = DRAIN_BYTES, max_seconds: float = DRAIN_SECONDS) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in BODYLESS:
            await self.app(scope, receive, send)
            return
        # A client waiting for "100 Continue" sends no body until the app asks for it: none to drain.
        unsent = _header(scope, b"expect") == b"100-continue"
        read_all = _header(scope, b"content-length") == b"0" and _header(scope, b"transfer-encoding") is None
        held = False

        async def tracking_receive() -> Message:
            nonlocal read_all, unsent
            unsent = False
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                read_all = True
            return message

        async def holding_send(message: Message) -> None:
            nonlocal held
            if read_all or unsent:
                await send(message)
            elif message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"connection", b"close")]
                await send({**message, "headers": headers})
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                held = True  # the answer's bytes now; its end after the drain
                if message.get("body"):
                    await send({**message, "more_body": True})
            else:
                await send(message)

        await self.app(scope, tracking_receive, holding_send)
        if held:
            await self.drain(receive)
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def drain(self, receive: Receive) -> None:
        """Read and discard request body messages until the body ends, the client leaves, or a bound is hit."""
        left = self.max_bytes
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.max_seconds):
                while left > 0:
                    message = await receive()
                    if message["type"] != "http.request" or not message.get("more_body", False):
                        return
                    left -= len(message.get("body", b""))
