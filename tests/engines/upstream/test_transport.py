"""The upstream transport's cheaper liveness check still tells a pooled connection the provider closed
from one it can reuse, so a request never goes out on a dead keep-alive connection."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpcore
import httpx

from limner.engines.upstream.lean_pool import seam_fits
from limner.engines.upstream.transport import FastStreams, provider_transport
from tests.support.waiting import until

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"


async def serve(close_after_answer: bool) -> tuple[asyncio.Server, int, list[str]]:
    """A loopback HTTP/1.1 server answering every request on a connection; closes it after one if asked.
    The list says what each connection did so far ("open", then "closed")."""
    connections: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = len(connections)
        connections.append("open")
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(RESPONSE)
                await writer.drain()
                if close_after_answer:
                    break
        except asyncio.IncompleteReadError:
            pass  # the client closed it
        writer.close()
        await writer.wait_closed()
        connections[index] = "closed"

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], connections


def closed(connections: list[str], count: int) -> Callable[[], bool]:
    return lambda: connections[:count] == ["closed"] * count


async def test_a_connection_the_server_closed_reads_as_readable() -> None:
    server, port, _ = await serve(close_after_answer=True)
    async with server:
        stream = await FastStreams().connect_tcp("127.0.0.1", port)
        assert stream.get_extra_info("is_readable") is False, "idle and open"
        await stream.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        assert (await stream.read(1024)).endswith(b"ok")
        await until(lambda: stream.get_extra_info("is_readable"), what="the server's close to be seen")
        assert stream.get_extra_info("socket") is not None
        await stream.aclose()


async def test_the_pool_reuses_open_connections_and_replaces_closed_ones() -> None:
    limits = httpx.Limits(max_keepalive_connections=4)
    for close, expected in ((False, 1), (True, 3)):
        server, port, connections = await serve(close_after_answer=close)
        async with server, httpx.AsyncClient(transport=provider_transport(limits=limits)) as client:
            for count in range(1, 4):
                response = await client.get(f"http://127.0.0.1:{port}/")
                assert (response.status_code, response.text) == (200, "ok")
                if close:  # the server's close is on the wire before the next request picks a connection
                    await until(closed(connections, count), what="the server to close")
        assert len(connections) == expected


async def burst(transport: httpx.AsyncBaseTransport, pooled: Callable[[], int]) -> tuple[int, int, int]:
    """12 concurrent requests, then 2 more: connections opened after each, and those pooled after the burst."""
    server, port, connections = await serve(close_after_answer=False)
    async with server:
        async with httpx.AsyncClient(transport=transport) as client:
            responses = await asyncio.gather(*(client.get(f"http://127.0.0.1:{port}/") for _ in range(12)))
            assert [(r.status_code, r.text) for r in responses] == [(200, "ok")] * 12
            opened, kept = len(connections), pooled()
            again = await asyncio.gather(*(client.get(f"http://127.0.0.1:{port}/") for _ in range(2)))
            assert [(r.status_code, r.text) for r in again] == [(200, "ok")] * 2
        # The client closed its connections: let the server's handlers see it before the server goes.
        await until(closed(connections, len(connections)), what="every connection to close")
        return opened, kept, len(connections)


def test_the_httpcore_seam_still_fits() -> None:
    hint = "httpcore changed its pool's internals: recheck limner/engines/upstream/lean_pool.py before raising its pin"
    assert seam_fits(), hint


async def test_the_lean_pool_decides_as_httpcore_does() -> None:
    """``LeanPool`` makes httpcore's decisions: at most ``max_connections`` at once (the rest wait), idle ones
    beyond ``max_keepalive_connections`` closed, kept ones reused: the same connections opened and kept."""
    limits = httpx.Limits(max_connections=3, max_keepalive_connections=2)
    stock = httpx.AsyncHTTPTransport(limits=limits, trust_env=False)
    expected = await burst(stock, lambda: len(stock._pool.connections))  # the library's own, to compare with
    assert expected[1] == 2 and expected[2] == expected[0], "httpcore keeps 2 and reuses them"
    lean = provider_transport(limits=limits)
    assert await burst(lean, lambda: lean.pooled) == expected


async def test_transport_failures_are_httpx_errors() -> None:
    """The engines catch httpx's errors: httpcore's are translated where they come out of the pool."""
    server = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    async with httpx.AsyncClient(transport=provider_transport(limits=httpx.Limits())) as client:
        try:
            await client.get(f"http://127.0.0.1:{port}/")
        except httpx.ConnectError as exc:
            assert isinstance(exc.__cause__, httpcore.ConnectError)
        else:
            raise AssertionError("a closed port must fail with httpx.ConnectError")


class _Recorder(httpcore.AsyncNetworkStream):
    """An inner stream that records what is written to it."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.writes.append(buffer)

    async def aclose(self) -> None:
        return None

    def get_extra_info(self, info: str) -> None:
        return None


async def test_a_request_head_goes_out_with_its_body_in_one_write() -> None:
    from limner.engines.upstream.transport import _Stream

    inner = _Recorder()
    stream = _Stream(inner)
    await stream.write(b"POST /x HTTP/1.1\r\ncontent-length: 2\r\n\r\n")
    assert inner.writes == [], "the head waits for its body"
    await stream.write(b"ok")
    assert inner.writes == [b"POST /x HTTP/1.1\r\ncontent-length: 2\r\n\r\nok"]
    await stream.write(b"GET /y HTTP/1.1\r\nhost: x\r\n\r\n")
    await stream.read(10)
    assert inner.writes[1:] == [b"GET /y HTTP/1.1\r\nhost: x\r\n\r\n"], "a request without a body goes out on read"
