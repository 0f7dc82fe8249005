"""The upstream transport's cheaper liveness check still tells a pooled connection the provider closed
from one it can reuse, so a request never goes out on a dead keep-alive connection."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

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
        async with server, httpx.AsyncClient(transport=provider_transport(limits=limits, trust_env=False)) as client:
            for count in range(1, 4):
                response = await client.get(f"http://127.0.0.1:{port}/")
                assert (response.status_code, response.text) == (200, "ok")
                if close:  # the server's close is on the wire before the next request picks a connection
                    await until(closed(connections, count), what="the server to close")
        assert len(connections) == expected
