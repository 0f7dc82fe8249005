"""A response's head goes out with its body in one write; a head whose body is late goes out alone."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import uvicorn

from limner.cli.local_services import free_port
from limner.http.wire import CoalescingTransport, HttpProtocol


class Recorder:
    """The transport under the coalescing one: records each write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


async def test_a_head_and_its_body_are_one_write() -> None:
    inner = Recorder()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(b"ok")
    assert inner.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
    assert transport.get_extra_info("peername") == "info:peername", "everything else is the inner transport's"


async def test_a_head_whose_body_is_late_goes_out_at_the_next_loop_turn_and_before_a_close() -> None:
    inner = Recorder()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    await asyncio.sleep(0)
    assert inner.writes == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
    transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    transport.close()
    assert inner.writes[1:] == [b"HTTP/1.1 204 No Content\r\n\r\n"] and inner.closed


async def test_uvicorn_serves_through_it() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"first ", "more_body": True})
        await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"second"})

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, http=HttpProtocol, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient() as client:
            for _ in range(3):  # keep-alive: the same connection answers again
                response = await client.get(f"http://127.0.0.1:{port}/")
                assert (response.status_code, response.text) == (200, "first second")
    finally:
        server.should_exit = True
        await task


def test_the_uvicorn_seam_still_fits() -> None:
    """``HttpProtocol`` subclasses uvicorn's internal httptools protocol and hands it a transport in
    ``connection_made``: if uvicorn changes that, this fails first, with what to do."""
    import inspect

    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    hint = "uvicorn changed its httptools protocol: recheck limner/http/wire.py before raising uvicorn's pin"
    assert issubclass(HttpProtocol, HttpToolsProtocol) and issubclass(HttpToolsProtocol, asyncio.Protocol), hint
    assert list(inspect.signature(HttpToolsProtocol.connection_made).parameters) == ["self", "transport"], hint
    assert "self.transport = transport" in inspect.getsource(HttpToolsProtocol.connection_made), hint
