"""A fake AI.ML API: ``POST /v1/generation/images`` -> a backend media path; an authorized ``GET``
of it -> ``{"url": presigned}``; the presigned URL downloads without (and refuses) credentials."""

from __future__ import annotations

import base64
import uuid
from urllib.parse import quote, unquote

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

FIELDS = {"model", "prompt", "image", "sequential_image_generation", "response_format", "size", "stream", "watermark"}


def error(status: int, code: str, message: str) -> Response:
    return JSONResponse({"error": {"code": code, "message": message}}, status)


async def generate(request: Request) -> Response:
    body, control, fault = await receive_json(request)
    if not bearer_ok(request):
        return error(401, "invalid_token", "Invalid API token.")
    if (response := await fault_response(fault, control, request, error)) is not None:
        return response
    if not isinstance(body, dict) or not body.get("prompt"):
        return error(400, "invalid_request", "Field 'prompt' is required")
    if set(body) - FIELDS:
        return error(400, "invalid_request", f"Unknown fields: {sorted(set(body) - FIELDS)}")
    if body.get("model") != "image-gen.pro-1.0":
        return error(400, "model_not_found", f"Unknown model '{body.get('model')}'.")
    if fault == "malformed":
        return Response(b"not json at all", media_type="application/json")
    image_id = f"{uuid.uuid4().hex[:12]}-{body.get('size', '2048x2048')}"
    request.app.state.garbage[image_id] = fault == "garbage"
    fmt = body.get("response_format", "url")
    if fmt == "b64_json":
        data = GARBAGE if fault == "garbage" else png(*parse_size(body.get("size"), (2048, 2048)))
        return JSONResponse({"data": {"image": {"b64_json": base64.b64encode(data).decode()}}})
    if fmt == "presigned_url":
        return JSONResponse({"data": {"image": {"url": f"{request.base_url}presigned/{image_id}.png?sig=abc"}}})
    path = quote(f"orgs/64/images/{image_id}.png", safe="")
    if fault == "foreign":  # an absolute media URL on another host: limner must not send it the key
        return JSONResponse({"data": {"image": {"url": f"http://127.0.0.2:9/v1/media/images/{path}"}}})
    return JSONResponse({"data": {"image": {"url": f"/v1/media/images/{path}"}}})


async def resolve(request: Request) -> Response:
    await record(request)
    if not bearer_ok(request):
        return error(401, "invalid_token", "Invalid API token.")
    path = unquote(request.path_params["path"])
    if not path.startswith("orgs/64/images/"):
        return error(404, "not_found", "No such image.")
    image_id = path.rsplit("/", 1)[1]
    return JSONResponse({"url": f"{request.base_url}presigned/{image_id}?sig=abc"})


async def presigned(request: Request) -> Response:
    await record(request)
    if "authorization" in request.headers:
        return error(400, "leak", "presigned URLs take no credentials")
    image_id = request.path_params["name"].removesuffix(".png")
    if request.app.state.garbage.get(image_id):
        return Response(GARBAGE, media_type="image/png")
    return Response(png(*parse_size(image_id.rsplit("-", 1)[1])), media_type="image/png")


def build() -> Starlette:
    app = Starlette(
        routes=[
            Route("/v1/generation/images", generate, methods=["POST"]),
            Route("/v1/media/images/{path:path}", resolve, methods=["GET"]),
            Route("/presigned/{name}", presigned, methods=["GET"]),
        ]
    )
    app.state.control = Control()
    app.state.garbage = {}
    return app
