"""Shared fixtures: small images in every format and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

Route = Callable[[BaseHTTPRequestHandler], None]


def make_image(size: tuple[int, int] = (32, 24), mode: str = "RGB") -> Image.Image:
    """A deterministic image with some structure, so encoders have something to compress."""
    width, height = size
    image = Image.new("RGB", size)
    image.putdata([((x * 7) % 256, (y * 11) % 256, ((x + y) * 5) % 256) for y in range(height) for x in range(width)])
    if mode in ("RGBA", "LA"):
        image.putalpha(Image.linear_gradient("L").resize(size))  # real transparency, not an opaque alpha band
    return image.convert(mode)


def image_bytes(fmt: str, size: tuple[int, int] = (32, 24), mode: str = "RGB", **save: object) -> bytes:
    buffer = io.BytesIO()
    make_image(size, mode).save(buffer, format=fmt, **save)
    return buffer.getvalue()


@dataclass
class LocalServer:
    """A tiny threaded HTTP server; tests add routes and read back what it received."""

    routes: dict[str, Route] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def send(self, handler: BaseHTTPRequestHandler, status: int, body: bytes = b"", **headers: str) -> None:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name.replace("_", "-"), value)
        if "Content_Length" not in headers:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def stall(self, handler: BaseHTTPRequestHandler) -> None:
        self.release.wait(10)


@pytest.fixture
def server() -> Iterator[LocalServer]:
    state = LocalServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hosts.append(self.headers.get("Host", ""))
            state.paths.append(self.path)
            route = state.routes.get(self.path.split("?", 1)[0])
            if route is None:
                state.send(self, 404, b"not found")
            else:
                route(self)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def stream_body(total: int, chunk: int = 64 * 1024) -> Route:
    """A close-delimited body (no Content-Length) of ``total`` bytes."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.end_headers()
        sent = 0
        try:
            while sent < total:
                handler.wfile.write(b"\0" * min(chunk, total - sent))
                sent += chunk
                time.sleep(0)
        except OSError:
            pass  # the client hung up once it had enough: that is the point

    return route
