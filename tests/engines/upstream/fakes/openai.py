"""A fake OpenAI Images API: ``/v1/images/generations`` (JSON), ``/v1/images/edits`` and
``/v1/images/variations`` (multipart), checking each model family's parameters like the real one."""

from __future__ import annotations

import base64
import json
from typing import Any

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
    record,
)

SIZES = {
    "dall-e-2": {"256x256", "512x512", "1024x1024"},
    "dall-e-3": {"1024x1024", "1792x1024", "1024x1792"},
    "gpt-image-1": {"1024x1024", "1536x1024", "1024x1536", "auto"},
}


def error(status: int, code: str, message: str, param: str | None = None) -> Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)


def check(fields: dict[str, Any], *, edit: bool = False) -> Response | None:
    """OpenAI's own refusals for parameters a model family does not take."""
    model = fields.get("model", "dall-e-2")
    if model not in SIZES:
        return error(404, "model_not_found", f"The model `{model}` does not exist or you do not have access to it.")
    if not edit and not fields.get("prompt") and fields.get("_endpoint") != "variations":
        return error(400, "missing_required_parameter", "Missing required parameter: 'prompt'.", "prompt")
    if str(fields.get("size", "1024x1024")) not in SIZES[model]:
        return error(400, "invalid_value", f"Invalid size for {model}.", "size")
    n = int(fields.get("n", 1))
    if model == "dall-e-3" and n != 1:
        return error(400, "invalid_value", "You must provide n=1 for this model.", "n")
    if model.startswith("gpt-image") and "response_format" in fields:
        return error(400, "unknown_parameter", "Unknown parameter: 'response_format'.", "response_format")
    if not model.startswith("gpt-image") and ("output_format" in fields or "background" in fields):
        return error(400, "unknown_parameter", "Unknown parameter: 'output_format'.", "output_format")
    return None


async def images(request: Request) -> Response:
    endpoint = request.url.path.rsplit("/", 1)[1]
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            fields = json.loads(await request.body())
        except ValueError:
            return error(400, "invalid_json", "We could not parse the JSON body of your request.")
        uploads: dict[str, int] = {}
    else:
        async with request.form() as form:  # closes the uploads' temporary files
            fields = {key: value for key, value in form.multi_items() if isinstance(value, str)}
            uploads = {}
            for key, value in form.multi_items():
                if not isinstance(value, str):
                    uploads[key] = uploads.get(key, 0) + 1
    control: Control = await record(request, {**fields, "_files": uploads, "_endpoint": endpoint})
    fault = control.take()
    if not bearer_ok(request):
        return error(401, "invalid_api_key", "Incorrect API key provided.")
    if (response := await fault_response(fault, control, request, error)) is not None:
        return response
    if endpoint != "generations" and not (uploads.get("image") or uploads.get("image[]")):
        return error(400, "missing_required_parameter", "Missing required parameter: 'image'.", "image")
    if (refusal := check({**fields, "_endpoint": endpoint}, edit=endpoint == "edits")) is not None:
        return refusal
    if fault == "malformed":
        return Response(b'{"created": 1, "data": [', media_type="application/json")
    width, height = parse_size(str(fields.get("size", "1024x1024")))
    data = GARBAGE if fault == "garbage" else (control.served or png(width, height))
    items = []
    for _ in range(int(fields.get("n", 1))):
        if fields.get("response_format", "url" if not str(fields.get("model")).startswith("gpt") else None) == "url":
            items.append({"url": f"{request.base_url}files/{width}x{height}.png"})
        else:
            items.append({"b64_json": base64.b64encode(data).decode(), "revised_prompt": "a revised prompt"})
    return JSONResponse({"created": 1700000000, "data": items})


async def file(request: Request) -> Response:
    await record(request)
    width, height = parse_size(request.path_params["name"].removesuffix(".png"))
    return Response(png(width, height), media_type="image/png")


def build() -> Starlette:
    app = Starlette(
        routes=[
            Route("/v1/images/{endpoint}", images, methods=["POST"]),
            Route("/files/{name}", file, methods=["GET"]),
        ]
    )
    app.state.control = Control()
    return app
