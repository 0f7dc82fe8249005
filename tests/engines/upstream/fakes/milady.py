"""A fake Milady API: ``POST /api/v1/generate-image`` -> ``images[]`` with ``url`` (or the inline
``image`` fallback when told its storage failed) and ``text``."""

from __future__ import annotations

import base64

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.engines.upstream.fakes.common import GARBAGE, Control, bearer_ok, fault_response, png, receive_json, record

MODELS = ("google/gemini-2.5-flash-image", "bfl/flux-kontext-max")
RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21")


def error(status: int, code: str, message: str) -> Response:
    if status == 404:
        status, message = 400, f"Invalid model: {message}"
    return JSONResponse({"error": message}, status)


async def generate(request: Request) -> Response:
    body, control, fault = await receive_json(request)
    if not bearer_ok(request):
        return error(401, "unauthorized", "Unauthorized")
    if (response := await fault_response(fault, control, request, error)) is not None:
        return response
    if not isinstance(body, dict) or not isinstance(body.get("prompt"), str) or not body["prompt"]:
        return error(400, "invalid", "Invalid prompt")
    if body.get("model", MODELS[0]) not in MODELS:
        return error(400, "invalid", "Invalid model")
    if body.get("aspectRatio", "1:1") not in RATIOS or not 1 <= body.get("numImages", 1) <= 4:
        return error(400, "invalid", "Invalid parameters")
    source = body.get("sourceImage")
    if source is not None and not str(source).startswith("data:image/"):
        return error(400, "invalid", "sourceImage must be a data URL")
    if fault == "malformed":
        return Response(b"Internal Server Error", media_type="application/json")
    if fault == "insufficient":
        return JSONResponse({"error": "Insufficient credits for image generation", "required": 0.02}, 402)
    width, height = (int(side) * 128 for side in body.get("aspectRatio", "1:1").split(":"))
    data = GARBAGE if fault == "garbage" else png(width, height)
    images = []
    for index in range(body.get("numImages", 1)):
        item = {
            "url": f"{request.base_url}blob/{width}x{height}.png",
            "text": f"caption {index}",
            "mimeType": "image/png",
            "fileSize": len(data),
        }
        if fault in ("inline", "garbage"):
            item = {**item, "url": None, "image": f"data:image/png;base64,{base64.b64encode(data).decode()}"}
        images.append(item)
    return JSONResponse({"images": images, "numImages": len(images)})


async def blob(request: Request) -> Response:
    await record(request)
    width, height = request.path_params["name"].removesuffix(".png").split("x")
    return Response(png(int(width), int(height)), media_type="image/png")


def build() -> Starlette:
    app = Starlette(
        routes=[
            Route("/api/v1/generate-image", generate, methods=["POST"]),
            Route("/blob/{name}", blob, methods=["GET"]),
        ]
    )
    app.state.control = Control()
    return app
