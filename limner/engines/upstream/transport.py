"""The HTTP transport upstream engines call providers through: httpcore's connection pool on a cheaper stream.

Before every request, and again when it ends, httpcore's pool asks each idle keep-alive connection
whether the provider closed it (``get_extra_info("is_readable")``). The default network stream answers
by rebuilding its socket's attribute table and creating a ``select.poll`` object each time: at tens of
pooled connections that was a tenth of a gateway's CPU. ``FastStreams`` answers the same question from
the socket it kept at connect time, with one poll object per connection, and sends a request's head with
its body in one write.

httpcore's pool takes the network backend as a constructor argument, and ``ProviderTransport`` is an
``httpx.AsyncBaseTransport`` over that pool (the same translation httpx's own transport makes: requests to
httpcore's, responses and errors back to httpx's); the pool is ``LeanPool`` (``lean_pool.py``, the one
isolated seam on httpcore's internals). TLS, timeouts, keep-alive and HTTP/1.1 are httpcore's, unchanged.
"""

from __future__ import annotations

import select
import socket
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx

from limner.engines.upstream.lean_pool import LeanPool

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


_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProxyError, httpx.ProxyError),
)
"""httpcore's errors and the httpx errors they are, most specific first (the engines catch httpx's)."""


@contextmanager
def _as_httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        mapped = next((theirs for ours, theirs in _ERRORS if isinstance(exc, ours)), None)
        if mapped is None:
            raise
        raise mapped(str(exc)) from exc


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            await close()


class ProviderTransport(httpx.AsyncBaseTransport):
    """httpx's transport contract over an httpcore pool of ``FastStreams`` connections."""

    def __init__(self, limits: httpx.Limits) -> None:
        self._pool = LeanPool(
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=FastStreams(),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
            headers=request.headers.raw,
            content=request.stream,  # type: ignore[arg-type]  # an httpx stream is an async byte iterable
            extensions=request.extensions,
        )
        with _as_httpx_errors():
            response = await self._pool.handle_async_request(core_request)
        assert isinstance(response.stream, AsyncIterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    @property
    def pooled(self) -> int:
        """Connections in the pool now, busy or idle."""
        return len(self._pool.connections)

    async def aclose(self) -> None:
        await self._pool.aclose()


def provider_transport(*, limits: httpx.Limits) -> ProviderTransport:
    """The transport for direct connections to providers (proxied ones are httpx's own mounts)."""
    return ProviderTransport(limits)
