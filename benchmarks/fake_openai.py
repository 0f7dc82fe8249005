"""An instant fake OpenAI Images provider: a bare ASGI app, so that what it costs per request is as
close to nothing as Python allows and every gateway in front of it is measured, not the provider.

``POST /v1/images/generations`` reads the body and answers one pre-encoded ``SIDE``x``SIDE`` PNG as
``b64_json``; ``GET /health`` answers ``{"ok": true}``. Anything else is a 404. It checks nothing, not
even the key: the gateways' own checks are what is being measured.

    python -m benchmarks.fake_openai --port 9100
"""

from __future__ import annotations

import argparse
import base64
import io
import json
from collections.abc import Awaitable, Callable
from typing import Any

SIDE = 256
"""DALL-E 2's smallest size, so that neither gateway has a reason to resize what comes back."""
MODEL = "dall-e-2"
PATH = "/v1/images/generations"

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def png(side: int = SIDE) -> bytes:
    """A solid-colour PNG: a real image that every decoder accepts, a few hundred bytes long."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (30, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()


def answer(side: int = SIDE) -> bytes:
    """The one response body, encoded once."""
    return json.dumps({"created": 1700000000, "data": [{"b64_json": base64.b64encode(png(side)).decode()}]}).encode()


def build(side: int = SIDE) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The ASGI app."""
    generations = answer(side)
    health = b'{"ok": true}'

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()  # lifespan.startup
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        more = True
        while more:  # drain the body, as a real provider reads it
            message = await receive()
            more = message.get("more_body", False)
        path, method = scope["path"], scope["method"]
        if method == "POST" and path == PATH:
            status, body = 200, generations
        elif path == "/health":
            status, body = 200, health
        else:
            status, body = 404, b'{"error": {"message": "not found", "type": "invalid_request_error"}}'
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--side", type=int, default=SIDE)
    args = parser.parse_args()
    uvicorn.run(build(args.side), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
