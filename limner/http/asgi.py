"""The shape every pure ASGI middleware of the app shares: HTTP requests only, and a ``send`` that watches
the response go out (its status, and whether its last body message was sent)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HttpMiddleware:
    """A pure ASGI middleware for HTTP requests (streaming bodies pass untouched); lifespan and websocket
    scopes go straight through. Subclasses implement ``handle``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class ResponseWatch:
    """``send``, remembering the response's status (0 until it starts) and whether it went out whole;
    ``on_start`` may change the start message (headers) before it is sent."""

    __slots__ = ("complete", "on_start", "send", "status")

    def __init__(self, send: Send, on_start: Callable[[Message], None] | None = None) -> None:
        self.send = send
        self.on_start = on_start
        self.status = 0
        self.complete = False

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            if self.on_start is not None:
                self.on_start(message)
        await self.send(message)
        if kind == "http.response.body" and not message.get("more_body", False):
            self.complete = True
