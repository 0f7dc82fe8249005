"""uvicorn's HTTP/1.1 protocol, sending a response's head and body in one write.

uvicorn writes a response's status line and headers as soon as the app sends ``http.response.start``,
and the body in a second write: two system calls, two packets, and on loopback two wake-ups of the
client, for a response that fits in one. ``HttpProtocol`` gives uvicorn's httptools protocol a
transport that holds a head until the next write (the body, which the app almost always sends right
after) and sends both together; a head still held when the event loop next runs its callbacks (a
streamed response whose first chunk is not ready) goes out alone then, as before. Everything else is
uvicorn's: parsing, flow control, keep-alive, errors.

This is the one place limner builds on another library's implementation rather than its interface:
uvicorn takes a protocol class publicly (``--http``), but ``HttpToolsProtocol`` is its own internal class.
So the seam is this module alone, uvicorn is pinned below its next minor version in ``pyproject.toml``,
and ``tests/http/test_wire.py`` fails with a message saying so when the class no longer fits.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEAD_END = b"\r\n\r\n"


class CoalescingTransport:
    """A transport that sends a held response head together with the write after it."""

    def __init__(self, inner: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._inner = inner
        self._loop = loop
        self._head = b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._head and bytes(data[-4:]) == HEAD_END:
            self._head = bytes(data)
            self._loop.call_soon(self.flush)
            return
        if self._head:
            data, self._head = self._head + bytes(data), b""
        self._inner.write(data)

    def flush(self) -> None:
        """Send a held head now (its body did not follow in the same turn of the event loop)."""
        if self._head:
            head, self._head = self._head, b""
            if not self._inner.is_closing():
                self._inner.write(head)

    def close(self) -> None:
        self.flush()
        self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a ``CoalescingTransport``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        coalescing: Any = CoalescingTransport(transport, self.loop)
        super().connection_made(coalescing)
