"""A fake AIGNE Hub: ``POST /api/images/generations``, OpenAI-shaped, ``data[].url|b64_json``."""

from __future__ import annotations

import base64

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.engines.upstream.fakes.common import (
    GARBAGE,
    Control,
    bearer_ok,
    fault_response,
    parse_size,
    png,
    receive_json,
    record,
)
from tests.engines.upstream.fakes.openai import error

MODELS = ("dall-e-2", "dall-e-3", "gpt-image-1", "gemini-2.5-flash-image")


async def generate(request: Request) -> Response:
    body, control, fault = await receive_json(request)
    if not bearer_ok(request):
        return error(401, "invalid_api_key", "Unauthorized")
    if (response := await fault_response(fault, control, request, error)) is not None:
        return response
    if not isinstance(body, dict) or not body.get("prompt"):
        return error(400, "invalid_request", "prompt is required")
    if body.get("model", "dall-e-2") not in MODELS:
        return error(404, "model_not_found", f"Model {body.get('model')} not found")
    if not 1 <= int(body.get("n", 1)) <= 10:
        return error(400, "invalid_value", "n must be between 1 and 10")
    if fault == "malformed":
        return Response(b"<html>502 Bad Gateway</html>", media_type="application/json")
    width, height = parse_size(body.get("size"))
    data = GARBAGE if fault == "garbage" else png(width, height)
    if body.get("response_format", "url") == "b64_json":
        items = [{"b64_json": base64.b64encode(data).decode()} for _ in range(int(body.get("n", 1)))]
    else:
        items = [{"url": f"{request.base_url}generated/{width}x{height}.png"} for _ in range(int(body.get("n", 1)))]
    return JSONResponse({"created": 1678886400, "data": items})


async def generated(request: Request) -> Response:
    await record(request)
    width, height = parse_size(request.path_params["name"].removesuffix(".png"))
    return Response(png(width, height), media_type="image/png")


def build() -> Starlette:
    app = Starlette(
        routes=[
            Route("/api/images/generations", generate, methods=["POST"]),
            Route("/generated/{name}", generated, methods=["GET"]),
        ]
    )
    app.state.control = Control()
    return app
