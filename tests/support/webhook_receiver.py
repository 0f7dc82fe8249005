"""A webhook receiver for tests: a tiny ASGI app, run on 127.0.0.1 with ``live_server``, that keeps every
request it gets and answers by path:

    /ok            204
    /flaky         500 the first time, then 200
    /fail          500 always
    /redirect      307 to /ok (a sender must not follow it)
    /hang          no answer until the test ends (a sender's timeout)

Tests verify what arrived with the Standard Webhooks reference library, never with limner's own code.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks.webhooks import Webhook

from tests.support.live_server import live_server

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def verify(self, secret: str) -> Any:
        """The parsed payload if the signature checks out under ``secret``; raises otherwise."""
        return Webhook(secret).verify(self.body, self.headers)


@dataclass
class Receiver:
    url: str = ""
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    _seen: dict[str, int] = field(default_factory=dict)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    def status_for(self, path: str) -> tuple[int, list[tuple[bytes, bytes]]]:
        count = self._seen.get(path, 0)
        self._seen[path] = count + 1
        if path == "/ok":
            return 204, []
        if path == "/flaky":
            return (500 if count == 0 else 200), []
        if path == "/redirect":
            return 307, [(b"location", b"/ok")]
        return 500, []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"  # served with lifespan="off"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        self.received.append(Received(scope["path"], headers, body))
        if scope["path"] == "/hang":
            while not self.release.is_set():
                await asyncio.sleep(0.02)
        status, extra = self.status_for(scope["path"])
        await send({"type": "http.response.start", "status": status, "headers": extra})
        await send({"type": "http.response.body", "body": b""})


@contextmanager
def webhook_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    with live_server(receiver, lifespan="off") as url:
        receiver.url = url
        try:
            yield receiver
        finally:
            receiver.release.set()
