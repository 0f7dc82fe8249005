"""``GET /limner/models``: which models are loaded in this server, for ``limner models --url`` and operators.

Read-only and admin-free, guarded like ``/metrics`` (open unless ``LIMNER_METRICS_TOKEN`` is set)::

    {"idle_unload_seconds": 900.0, "memory_budget_bytes": 0,
     "models": [{"id": "limner-emoji-32", "engine": "builtin", "loaded": true, "loading": false,
                 "resident_bytes": 1843200,
                 "in_flight": 0, "idle_seconds": 12.5}]}

The dialects' ``GET /v1/models`` keep their upstream shapes; this is limner's own.
"""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from limner.http import openapi
from limner.http.deps import get_state
from limner.http.metrics import refuse_without_metrics_token

router = APIRouter(tags=["Ops"])


@router.get(
    "/limner/models",
    responses={
        401: {
            "model": openapi.CodedErrorResponse,
            "description": "Unauthorized: LIMNER_METRICS_TOKEN is set and the request did not send it.",
        }
    },
)
async def list_model_residency(request: Request) -> Response:
    """Each catalog model: loaded or not, weight bytes held, requests in flight, seconds idle."""
    refused = refuse_without_metrics_token(request)
    if refused is not None:
        return refused
    residency = get_state(request).service.residency
    return JSONResponse(
        {
            "idle_unload_seconds": residency.idle_seconds,
            "memory_budget_bytes": residency.budget_bytes,
            "models": [asdict(model) for model in residency.status()],
        }
    )
