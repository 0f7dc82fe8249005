"""A fake Black Forest Labs API: ``POST /v1/{model}`` with ``x-key`` -> ``{id, polling_url}``; the
polling URL says ``Pending`` once, then ``Ready`` with ``result.sample`` (or a failure status)."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.engines.upstream.fakes.common import GARBAGE, KEY, Control, fault_response, png, receive_json, record

MODELS = ("flux-kontext-max", "flux-kontext-pro", "flux-pro-1.1")
STATUSES = {
    "moderated": "Request Moderated",
    "content-moderated": "Content Moderated",
    "error": "Error",
    "lost": "Task not found",
}


def error(status: int, code: str, message: str) -> Response:
    return JSONResponse({"detail": message}, status)


async def submit(request: Request) -> Response:
    model = request.path_params["model"]
    body, control, fault = await receive_json(request)
    if request.headers.get("x-key") != KEY:
        return error(403, "forbidden", "Not authenticated - Invalid Authentication")
    if (response := await fault_response(fault, control, request, error)) is not None:
        return response
    if model not in MODELS:
        return error(404, "not_found", "Not Found")
    if not isinstance(body, dict) or not body.get("prompt"):
        return JSONResponse({"detail": [{"loc": ["body", "prompt"], "msg": "Field required"}]}, 422)
    if fault == "malformed":
        return Response(b'{"id": ', media_type="application/json")
    task_id = str(uuid.uuid4())
    tasks: dict[str, Any] = request.app.state.tasks
    tasks[task_id] = {"polls": 0, "fault": fault, "body": body}
    return JSONResponse({"id": task_id, "polling_url": f"{request.base_url}v1/get_result?id={task_id}"})


async def get_result(request: Request) -> Response:
    await record(request)
    if request.headers.get("x-key") != KEY:
        return error(403, "forbidden", "Not authenticated - Invalid Authentication")
    task_id = request.query_params.get("id", "")
    task = request.app.state.tasks.get(task_id)
    if task is None:
        return JSONResponse({"id": task_id, "status": "Task not found"})
    task["polls"] += 1
    if task["fault"] in STATUSES:
        return JSONResponse({"id": task_id, "status": STATUSES[task["fault"]], "result": None})
    if task["polls"] < 2 or task["fault"] == "pending":
        return JSONResponse({"id": task_id, "status": "Pending", "result": None})
    sample = f"{request.base_url}delivery/{task_id}.png"
    return JSONResponse({"id": task_id, "status": "Ready", "result": {"sample": sample, "seed": task["body"]["seed"]}})


async def delivery(request: Request) -> Response:
    await record(request)
    if "x-key" in request.headers:
        return error(400, "leak", "the delivery host must not receive the API key")
    task = request.app.state.tasks.get(request.path_params["name"].removesuffix(".png"))
    if task is None:
        return Response(status_code=404)
    if task["fault"] == "garbage":
        return Response(GARBAGE, media_type="image/png")
    body = task["body"]
    ratio = body.get("aspect_ratio", "1:1")
    width, height = (
        (int(side) * 64 for side in ratio.split(":"))
        if "aspect_ratio" in body
        else (body.get("width", 1024), body.get("height", 1024))
    )
    return Response(png(width, height), media_type="image/png")


def build() -> Starlette:
    app = Starlette(
        routes=[
            Route("/v1/get_result", get_result, methods=["GET"]),
            Route("/v1/{model}", submit, methods=["POST"]),
            Route("/delivery/{name}", delivery, methods=["GET"]),
        ]
    )
    app.state.control = Control()
    app.state.tasks = {}
    return app
