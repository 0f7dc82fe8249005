"""The HTTP transport upstream engines call providers through: httpx's own, with a cheaper liveness check.

Before every request, and again when it ends, httpx's connection pool asks each idle keep-alive
connection whether the provider closed it (``get_extra_info("is_readable")``). The default network
stream answers by rebuilding its socket's attribute table and creating a ``select.poll`` object each
time: at tens of pooled connections that was a tenth of a gateway's CPU. ``FastStreams`` answers the
same question from the socket it kept at connect time, with one poll object per connection. Everything
else (TLS, timeouts, errors, pooling) is httpx's and httpcore's, unchanged.
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
    """A network stream whose readability check costs one ``poll(0)``."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._socket: socket.socket | None = inner.get_extra_info("socket")
        self._poll: Any = None
        if self._socket is not None and hasattr(select, "poll"):
            self._poll = select.poll()
            self._poll.register(self._socket.fileno(), select.POLLIN)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
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


def provider_transport(*, limits: httpx.Limits, trust_env: bool) -> httpx.AsyncHTTPTransport:
    """httpx's transport for direct connections, on ``FastStreams`` (proxied ones are httpx's own mounts)."""
    transport = httpx.AsyncHTTPTransport(limits=limits, trust_env=trust_env)
    pool = getattr(transport, "_pool", None)
    if isinstance(pool, httpcore.AsyncConnectionPool) and hasattr(pool, "_network_backend"):
        pool._network_backend = FastStreams()
    return transport
