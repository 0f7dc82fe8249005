"""The HTTP transport upstream engines call providers through: httpx's own, with a cheaper liveness check.

Before every request, and again when it ends, httpx's connection pool asks each idle keep-alive
connection whether the provider closed it (``get_extra_info("is_readable")``). The default network
stream answers by rebuilding its socket's attribute table and creating a ``select.poll`` object each
time: at tens of pooled connections that was a tenth of a gateway's CPU. ``FastStreams`` answers the
same question from the socket it kept at connect time, with one poll object per connection.

httpcore also re-plans the whole pool at each request's start and end in a way that grows with the square
of the pooled connections (for every idle one it counts them all again, and it lists every available and
every idle one for each queued request): at 32 pooled connections, a few thousand method calls per
request. ``LeanPool`` makes the same decisions, in the same order, in one pass, and asks only the
connection it is about to hand out whether it expired (httpcore asks every pooled one, twice per request:
one ``poll`` each, at 64 pooled connections most of a request's pool time). An expired connection nobody
picks stays pooled, counted against the limits, until it is picked or closed as surplus. Everything else
(TLS, timeouts, errors, HTTP/2) is httpx's and httpcore's, unchanged.
"""

from __future__ import annotations

import select
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

SocketOption = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]


class _Stream(httpcore.AsyncNetworkStream):
    """A network stream whose readability check costs one ``poll(0)``, and which sends a request's head
    together with its body: httpcore writes them one after the other, two system calls and two packets
    where one does. A head is held until the next write (the body) or read (a request without one)."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._socket: socket.socket | None = inner.get_extra_info("socket")
        self._poll: Any = None
        if self._socket is not None and hasattr(select, "poll"):
            self._poll = select.poll()
            self._poll.register(self._socket.fileno(), select.POLLIN)
        self._head = b""

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._head:
            await self._send(b"", timeout)
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not self._head and buffer.endswith(b"\r\n\r\n"):
            self._head = buffer  # a request's head: its body, if any, comes next
            return
        await self._send(buffer, timeout)

    async def _send(self, buffer: bytes, timeout: float | None) -> None:
        buffer, self._head = self._head + buffer, b""
        if buffer:
            await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        self._head = b""
        await self._inner.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable" and self._poll is not None and self._socket is not None:
            if self._socket.fileno() < 0:
                return True  # closed under us: as the default check answers
            return bool(self._poll.poll(0))
        return self._inner.get_extra_info(info)


class FastStreams(httpcore.AsyncNetworkBackend):
    """httpcore's network backend on asyncio (anyio's), its streams wrapped in ``_Stream``."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.connect_tcp(host, port, timeout, local_address, socket_options))

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[SocketOption] | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class LeanPool(httpcore.AsyncConnectionPool):
    """httpcore's pool, its bookkeeping linear in the pooled connections (the decisions are httpcore's)."""

    def _assign_requests_to_connections(self) -> list[httpcore.AsyncConnectionInterface]:
        closing: list[httpcore.AsyncConnectionInterface] = []
        connections = self._connections
        # Drop closed connections, and close idle ones while more are pooled than are kept alive.
        remaining = len(connections)
        kept = []
        for connection in connections:
            if connection.is_closed():
                remaining -= 1
            elif connection.is_idle() and remaining > self._max_keepalive_connections:
                remaining -= 1
                closing.append(connection)
            else:
                kept.append(connection)
        connections[:] = kept
        # Give each queued request the first available connection that has not expired, else a new one
        # (closing an idle one at the limit).
        for pool_request in self._requests:
            if not pool_request.is_queued():
                continue
            origin = pool_request.request.url.origin
            found = self._available(origin, closing)
            if found is None:
                if len(connections) >= self._max_connections:
                    idle = next((c for c in connections if c.is_idle()), None)
                    if idle is None:
                        continue  # stays queued until a connection frees up
                    connections.remove(idle)
                    closing.append(idle)
                found = self.create_connection(origin)
                connections.append(found)
            pool_request.assign_to_connection(found)
        return closing

    async def _close_connections(self, closing: list[httpcore.AsyncConnectionInterface]) -> None:
        if closing:  # httpcore shields an empty loop from cancellation too: twice per request
            await super()._close_connections(closing)

    def _available(
        self, origin: httpcore.Origin, closing: list[httpcore.AsyncConnectionInterface]
    ) -> httpcore.AsyncConnectionInterface | None:
        """The first pooled connection that can take a request to ``origin`` now; expired ones met on the
        way (the provider closed them, or their keep-alive ran out) are moved to ``closing``."""
        connections = self._connections
        index = 0
        while index < len(connections):
            connection = connections[index]
            if connection.can_handle_request(origin) and connection.is_available():
                if not connection.has_expired():
                    return connection
                del connections[index]
                closing.append(connection)
                continue
            index += 1
        return None


def provider_transport(*, limits: httpx.Limits, trust_env: bool) -> httpx.AsyncHTTPTransport:
    """httpx's transport for direct connections, on ``FastStreams`` (proxied ones are httpx's own mounts)."""
    transport = httpx.AsyncHTTPTransport(limits=limits, trust_env=trust_env)
    pool = getattr(transport, "_pool", None)
    if type(pool) is httpcore.AsyncConnectionPool and hasattr(pool, "_network_backend"):
        pool._network_backend = FastStreams()
        if hasattr(pool, "_assign_requests_to_connections") and hasattr(pool, "_requests"):
            pool.__class__ = LeanPool
    return transport
