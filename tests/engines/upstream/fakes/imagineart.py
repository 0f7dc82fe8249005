"""A fake ImagineArt 2.0 API: multipart ``/v1/images/generations`` and ``/v1/images/edits``
answering PNG bytes with ``X-Seed``; JSON error envelope ``{"error": {code, message, request_id}}``."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.engines.upstream.fakes.common import GARBAGE, Control, bearer_ok, fault_response, png, record

RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "21:9", "4:5", "5:4", "3:1", "1:3", "4:1", "1:4")
CODES = {404: (502, "model_not_available")}


def error(status: int, code: str, message: str) -> Response:
    status, code = CODES.get(status, (status, code))
    return JSONResponse({"error": {"code": code, "message": message, "request_id": "req-1"}}, status)


async def images(request: Request) -> Response:
    endpoint = request.url.path.rsplit("/", 1)[1]
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        await record(request)
        return error(400, "invalid_request", "Send multipart/form-data.")
    async with request.form() as form:  # closes the uploads' temporary files
        fields = {key: value for key, value in form.multi_items() if isinstance(value, str)}
        files = sum(key == "images" and isinstance(value, UploadFile) for key, value in form.multi_items())
    control: Control = await record(request, {**fields, "_files": files})
    fault = control.take()
    if not bearer_ok(request):
        return error(401, "invalid_token", "Invalid API token.")
    if (response := await fault_response(fault, control, request, error)) is not None:
        return response
    if not fields.get("prompt"):
        return error(400, "invalid_request", "Missing required parameter: 'prompt'.")
    if fields.get("aspect_ratio", "1:1") not in (*RATIOS, "auto") or fields.get("resolution", "2K") not in ("1K", "2K"):
        return error(400, "invalid_request", "Invalid aspect_ratio or resolution.")
    if endpoint == "edits" and not 1 <= files <= 4:
        return error(400, "invalid_request", "Send 1-4 images.")
    if endpoint == "generations" and files:
        return error(400, "invalid_request", "Generations take no files.")
    if fault == "garbage":
        return Response(GARBAGE, media_type="image/png")
    if fault == "malformed":
        return Response(b'{"ok": true}', media_type="application/json")
    seed = int(fields.get("seed") or 0) or 4242
    width, height = (int(side) * 64 for side in fields.get("aspect_ratio", "1:1").replace("auto", "1:1").split(":"))
    return Response(png(width, height), media_type="image/png", headers={"X-Seed": str(seed)})


def build() -> Starlette:
    app = Starlette(routes=[Route("/v1/images/{endpoint}", images, methods=["POST"])])
    app.state.control = Control()
    return app
