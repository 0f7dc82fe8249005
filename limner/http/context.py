"""Request ids: one per request, on every log line and in every response's ``X-Request-Id``."""

from __future__ import annotations

import logging
import re
import secrets
import time
from contextvars import ContextVar

from starlette.types import Message, Receive, Scope, Send

from limner.http.asgi import HttpMiddleware, ResponseWatch

REQUEST_ID_HEADER = "x-request-id"
request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


def current_request_id() -> str:
    return request_id_var.get()


access_log = logging.getLogger("limner.access")


class RequestIdMiddleware(HttpMiddleware):
    """Takes a sane client ``X-Request-Id`` or makes one, echoes it on the response, and logs the request.

    The access line is written here rather than by uvicorn so that it carries the request id too;
    it names method, path (never the query string, which may hold signatures) and status.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        incoming = dict(scope.get("headers") or []).get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        request_id = incoming if _CLIENT_ID.match(incoming) else new_request_id()
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id

        started = time.perf_counter()

        def with_id(message: Message) -> None:
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER.encode()]
            headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
            message["headers"] = headers

        watch = ResponseWatch(send, on_start=with_id)
        try:
            await self.app(scope, receive, watch)
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            access_log.info("%s %s %s %.1fms", scope["method"], scope["path"], watch.status or "-", elapsed)
            request_id_var.reset(token)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True
