"""A fake Gemini API: ``POST /v1beta/models/{model}:generateContent`` with ``x-goog-api-key``,
answering an image part and a text part (or a blocked prompt, or text only)."""

from __future__ import annotations

import base64
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.engines.upstream.fakes.common import GARBAGE, KEY, Control, fault_response, png, receive_json

MODELS = ("gemini-2.5-flash-image", "gemini-3-pro-image-preview")
STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL"}
RATIOS = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "9:16": (768, 1344),
    "4:3": (1184, 864),
    "3:4": (864, 1184),
    "3:2": (1248, 832),
    "2:3": (832, 1248),
    "21:9": (1536, 672),
    "4:5": (896, 1152),
    "5:4": (1152, 896),
}


def error(status: int, code: str, message: str) -> Response:
    return JSONResponse(
        {"error": {"code": status, "message": message, "status": STATUS.get(status, "UNKNOWN")}}, status
    )


def bad_key() -> Response:
    body = {
        "error": {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
        }
    }
    return JSONResponse(body, 400)


async def generate_content(request: Request) -> Response:
    model, _, action = request.path_params["target"].partition(":")
    body, control, fault = await receive_json(request)
    if request.headers.get("x-goog-api-key") != KEY or fault == "reject":
        return bad_key()
    if (response := await fault_response(fault, control, request, error)) is not None:
        return response
    if action != "generateContent" or model not in MODELS:
        return error(404, "not_found", f"models/{model} is not found for API version v1beta.")
    if not isinstance(body, dict) or not body.get("contents"):
        return error(400, "invalid", "* GenerateContentRequest.contents: contents is not specified")
    parts = body["contents"][0]["parts"]
    if not isinstance(parts[0].get("text"), str):
        return error(400, "invalid", "the first part must be text")
    if fault == "blocked":
        return JSONResponse({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})
    if fault == "malformed":
        return Response(b"{candidates: oops", media_type="application/json")
    ratio = body.get("generationConfig", {}).get("imageConfig", {}).get("aspectRatio", "1:1")
    data = GARBAGE if fault == "garbage" else png(*RATIOS[ratio])
    inputs = sum(1 for part in parts if "inline_data" in part)
    out: list[dict[str, Any]] = [{"text": f"Here is your image ({inputs} inputs)."}]
    if fault != "text-only":
        out.append({"inlineData": {"mimeType": "image/png", "data": base64.b64encode(data).decode()}})
    return JSONResponse({"candidates": [{"content": {"role": "model", "parts": out}, "finishReason": "STOP"}]})


def build() -> Starlette:
    app = Starlette(routes=[Route("/v1beta/models/{target}", generate_content, methods=["POST"])])
    app.state.control = Control()
    return app
