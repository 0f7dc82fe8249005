"""What every fake provider shares: the credential, a ``Control`` a test uses to make the next
requests fail in a chosen way, and a record of what the fake received.

Faults, each in the provider's own error format: ``fail`` (500), ``throttle`` (429 with
``Retry-After``), ``stall`` (no answer for ``stall_seconds``; a client that gives up is counted in
``aborted``), ``reject`` (401), ``unknown`` (unknown model), ``echo`` (400 whose message repeats the
credential, as careless providers do), ``garbage`` (a 200 whose image is not an image) and
``malformed`` (a 200 that is not JSON). ``times`` says how many requests the fault applies to.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from starlette.requests import Request
from starlette.responses import Response

KEY = "sk-limner-test-0123456789abcdefSECRET"
"""The provider credential tests give limner; it must never come back out of limner."""
KEY_ENV = "LIMNER_TEST_UPSTREAM_KEY"
GARBAGE = b"<html>definitely not an image</html>"

ErrorFormat = Callable[[int, str, str], Response]
"""(status, code, message) -> the provider's error response."""


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any = None


@dataclass
class Control:
    fault: str | None = None
    times: int = 1_000_000
    retry_after: str = "0"
    stall_seconds: float = 10.0
    served: bytes | None = None
    """The image to answer with instead of a drawn one (a provider's image that carries Content Credentials)."""
    requests: list[Seen] = field(default_factory=list)
    aborted: int = 0

    def set(self, fault: str | None, times: int = 1_000_000, **settings: Any) -> None:
        self.fault, self.times = fault, times
        for name, value in settings.items():
            setattr(self, name, value)

    def take(self) -> str | None:
        """The fault for this request, if any is left."""
        if self.fault is None or self.times <= 0:
            return None
        self.times -= 1
        return self.fault

    def posts(self) -> list[Seen]:
        return [seen for seen in self.requests if seen.method == "POST"]


def control_of(request: Request) -> Control:
    control: Control = request.app.state.control
    return control


async def record(request: Request, body: Any = None) -> Control:
    control = control_of(request)
    headers = {name.lower(): value for name, value in request.headers.items()}
    control.requests.append(Seen(request.method, request.url.path, headers, body))
    return control


async def receive_json(request: Request) -> tuple[Any, Control, str | None]:
    """A JSON call, recorded: its body (None when the body is not JSON), the control, and the fault queued for it."""
    try:
        body = json.loads(await request.body())
    except ValueError:
        body = None
    control = await record(request, body)
    return body, control, control.take()


async def fault_response(fault: str | None, control: Control, request: Request, error: ErrorFormat) -> Response | None:
    """The response for a generic fault; None for no fault or one the provider renders itself."""
    if fault == "fail":
        return error(500, "server_error", "The server had an error while processing your request.")
    if fault == "throttle":
        response = error(429, "rate_limited", "Rate limit reached; slow down.")
        response.headers["Retry-After"] = control.retry_after
        return response
    if fault == "stall":
        await stall(control, request)
        return error(500, "stalled", "answered too late")
    if fault == "reject":
        return error(401, "invalid_api_key", f"Incorrect API key provided: {KEY[:6]}***{KEY[-4:]}.")
    if fault == "unknown":
        return error(404, "model_not_found", "The model does not exist or you do not have access to it.")
    if fault == "echo":
        return error(400, "invalid_request", f"Bad field for key={KEY} (Authorization: Bearer {KEY}); prompt too odd")
    return None


async def stall(control: Control, request: Request) -> None:
    """Wait ``stall_seconds`` unless the client goes away first (then count it in ``aborted``)."""
    deadline = time.monotonic() + control.stall_seconds
    while time.monotonic() < deadline:
        if await request.is_disconnected():
            control.aborted += 1
            return
        await asyncio.sleep(0.02)


def png(width: int = 64, height: int = 64, color: tuple[int, int, int] = (200, 40, 90)) -> bytes:
    """A small PNG in the asked shape (at most 64 pixels a side: the service scales results anyway)."""
    scale = 64 / max(width, height)
    size = (max(1, round(width * min(1.0, scale))), max(1, round(height * min(1.0, scale))))
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def bearer_ok(request: Request) -> bool:
    return request.headers.get("authorization") == f"Bearer {KEY}"


def parse_size(value: str | None, default: tuple[int, int] = (1024, 1024)) -> tuple[int, int]:
    if not value or "x" not in value:
        return default
    width, height = value.lower().split("x", 1)
    return int(width), int(height)
