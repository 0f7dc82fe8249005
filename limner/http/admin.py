"""The admin HTTP API under ``/admin``: consumers, tokens, credits, usage and async jobs, the same as the CLI.

Guarded by ``Authorization: Bearer $LIMNER_ADMIN_TOKEN`` (compared in constant time); with no admin
token configured the whole API answers 403. Errors are ``{"error": {"code", "message", "param"}}``, for
every input (bodies pass the same JSON checks as the dialects' before FastAPI parses them; numbers,
names and token ids are bounded), so no input gets a plain-text 500.
Amounts are credits (decimals), stored exactly as micro-credits. A token's secret appears in exactly
one response: the one that created it. Revoking a token cancels the async jobs it submitted that have not
finished (``limner.service.job_cancel``), as cancelling a consumer's jobs or one job by id does.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect

from limner.accounts.administration import Administration
from limner.accounts.consumers import MAX_LIMIT, MAX_PRIORITY, MAX_START_DEADLINE, Access, ConsumerInfo
from limner.accounts.models import MAX_MICROS, MICROS, LedgerEntry, UsageRecord, from_micros, to_micros
from limner.accounts.tokens import IssuedToken, TokenInfo
from limner.core.errors import Forbidden, InvalidRequest, InvalidToken, LimnerError, MissingBearerToken, NotFound
from limner.http import jsonbody
from limner.service.accounting import CLIENT_CLOSED
from limner.service.job_service import JobService
from limner.service.job_shapes import JobView


class AdminError(BaseModel):
    code: str
    message: str
    param: str | None


class AdminErrorResponse(BaseModel):
    """``{"error": {"code", "message", "param"}}``: every admin error."""

    error: AdminError


ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": AdminErrorResponse, "description": "Bad Request: an input the checks refuse."},
    401: {"model": AdminErrorResponse, "description": "Unauthorized: no admin token, or a wrong one."},
    403: {"model": AdminErrorResponse, "description": "Forbidden: the admin API is disabled (no LIMNER_ADMIN_TOKEN)."},
}
NO_SUCH: dict[int | str, dict[str, Any]] = {
    404: {"model": AdminErrorResponse, "description": "Not Found: no such consumer or token."}
}


def render(error: LimnerError) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": error.code, "message": error.message, "param": error.param}}, status_code=error.status
    )


class AdminRoute(APIRoute):
    """Admin errors, expected or not, in the admin envelope."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                await check_body(request)
                return await handler(request)
            except LimnerError as error:
                return render(error)
            except ClientDisconnect:
                return Response(status_code=CLIENT_CLOSED)
            except RequestValidationError as exc:
                first = exc.errors()[0]
                field = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
                return render(InvalidRequest(f"Invalid '{field}': {first.get('msg')}.", param=field))
            except HTTPException as exc:  # FastAPI could not read the body: say why, in this envelope
                cause = exc.__cause__
                if isinstance(cause, ClientDisconnect):
                    return Response(status_code=CLIENT_CLOSED)
                if isinstance(cause, LimnerError):
                    return render(cause)
                return render(InvalidRequest(f"Invalid request: {exc.detail}."))

        return handle


async def check_body(request: Request) -> None:
    """A body, if any, must be JSON that ``limner.http.jsonbody`` accepts (read once; FastAPI reuses it)."""
    if request.method in ("GET", "HEAD", "DELETE"):
        return
    raw = await request.body()
    if raw:
        jsonbody.check_content_type(request.headers.get("content-type", ""))
        jsonbody.parse(raw)


ADMIN_BEARER = HTTPBearer(
    auto_error=False, scheme_name="AdminToken", description="The value of LIMNER_ADMIN_TOKEN, as a bearer token."
)
"""Declares the admin token in the OpenAPI document; the checks (and their error envelopes) are limner's."""


async def require_admin(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(ADMIN_BEARER)]
) -> Administration:
    """The ledger's administration, for a caller holding the admin token."""
    state = request.app.state.limner
    expected = state.settings.secret("admin_token")
    if expected is None:
        raise Forbidden("The admin API is disabled: set LIMNER_ADMIN_TOKEN to enable it.")
    given = credentials.credentials.strip() if credentials is not None else ""
    if not given:
        raise MissingBearerToken("Missing bearer token: send 'Authorization: Bearer <admin token>'.")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise InvalidToken("Invalid admin token.")
    return Administration(state.accounts.db)


router = APIRouter(prefix="/admin", tags=["Admin"], route_class=AdminRoute, responses=ADMIN_ERRORS)
Admin = Depends(require_admin)


async def require_admin_jobs(request: Request, _admin: Administration = Admin) -> JobService:
    """The job service, for a caller holding the admin token."""
    job_service: JobService = request.app.state.limner.job_service
    return job_service


AdminJobs = Depends(require_admin_jobs)


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def consumer_json(info: ConsumerInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "created_at": _time(info.created_at),
        "balance": from_micros(info.balance),
        "metered": info.balance is not None,
        "rpm": info.rpm,
        "ipm": info.ipm,
        "note": info.note,
        "active_tokens": info.active_tokens,
        "access": access_json(info.access),
    }


def access_json(access: Access) -> dict[str, Any]:
    return {
        "max_priority": access.max_priority,
        "start_deadline": access.start_deadline,
        "models": None if access.models is None else list(access.models),
        "loras": None if access.loras is None else list(access.loras),
    }


def token_json(info: TokenInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "prefix": info.prefix,
        "consumer": info.consumer,
        "label": info.label,
        "status": info.status(),
        "created_at": _time(info.created_at),
        "expires_at": _time(info.expires_at),
        "revoked_at": _time(info.revoked_at),
        "rotated_from": info.rotated_from_id,
        "last_used_at": _time(info.last_used_at),
    }


def issued_json(issued: IssuedToken) -> dict[str, Any]:
    return {
        "id": issued.id,
        "token": issued.token,
        "prefix": issued.prefix,
        "consumer": issued.consumer,
        "expires_at": _time(issued.expires_at),
        "rotated_from": issued.rotated_from_id,
    }


def ledger_json(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "created_at": _time(entry.created_at),
        "kind": entry.kind,
        "delta": from_micros(entry.delta),
        "amount": from_micros(entry.amount),
        "balance_after": from_micros(entry.balance_after),
        "reservation": entry.reservation_id,
        "request_id": entry.request_id,
        "note": entry.note,
    }


def usage_json(record: UsageRecord) -> dict[str, Any]:
    return {
        "created_at": _time(record.created_at),
        "request_id": record.request_id,
        "consumer": record.consumer,
        "token_id": record.token_id,
        "model": record.model,
        "dialect": record.dialect,
        "images": record.images,
        "pixels": record.pixels,
        "seconds": round(record.seconds, 4),
        "cost": from_micros(record.cost),
        "status": record.status,
        "error_code": record.error_code,
    }


def job_json(view: JobView) -> dict[str, Any]:
    """An async job as an operator sees it: who, where it stands, and why it ended (never its request)."""
    return {
        "id": view.id,
        "consumer": view.consumer,
        "token_id": view.token_id,
        "status": view.status,
        "stopping": view.status == "running" and view.cancel_requested,
        "error": view.error_code,
        "error_message": view.error_message,
        "created_at": _time(view.created_at),
        "started_at": _time(view.started_at),
        "finished_at": _time(view.finished_at),
    }


def cancelled_json(request: Request, views: list[JobView]) -> dict[str, Any]:
    """What a cancellation did: queued jobs ended, running ones told to stop (here at once, on other
    replicas within ``job_poll_seconds``; each refunded when it stops)."""
    runner = request.app.state.limner.runner
    stopping = [view.id for view in views if view.status == "running"]
    if runner is not None:
        for job_id in stopping:
            runner.cancel_here(job_id)
    return {
        "data": [job_json(view) for view in views],
        "cancelled": sum(view.status == "cancelled" for view in views),
        "stopping": len(stopping),
    }


class ConsumerBody(BaseModel):
    name: str = Field(max_length=64)
    rpm: int | None = Field(None, ge=0, le=MAX_LIMIT)
    ipm: int | None = Field(None, ge=0, le=MAX_LIMIT)
    note: str = Field("", max_length=200)


class LimitsBody(BaseModel):
    rpm: int | None = Field(None, ge=0, le=MAX_LIMIT, description="requests/min per model; 0: the server default")
    ipm: int | None = Field(None, ge=0, le=MAX_LIMIT, description="images/min per model; 0: the server default")


class AccessBody(BaseModel):
    max_priority: int = Field(0, ge=0, le=MAX_PRIORITY, description="Highest Limner-Priority its requests may ask")
    start_deadline: float | None = Field(
        None, gt=0, le=MAX_START_DEADLINE, description="Seconds a request may wait to start when it names none"
    )
    models: list[Annotated[str, Field(max_length=200)]] | None = Field(
        None, max_length=1000, description="Catalog ids it may use; null: every model"
    )
    loras: list[Annotated[str, Field(max_length=64)]] | None = Field(
        None, max_length=1000, description="LoRA adapter names it may use; null: every adapter"
    )


class TokenBody(BaseModel):
    consumer: str = Field(max_length=64)
    expires: str | None = Field(None, max_length=40, description="30d, 12h, an ISO date, or null for never")
    label: str = Field("", max_length=100)
    rpm: int | None = Field(None, ge=0, le=MAX_LIMIT)
    ipm: int | None = Field(None, ge=0, le=MAX_LIMIT)


class RotateBody(BaseModel):
    expires: str | None = Field(None, max_length=40)
    label: str = Field("", max_length=100)


class GrantBody(BaseModel):
    amount: float = Field(
        allow_inf_nan=False,
        ge=-MAX_MICROS / MICROS,
        le=MAX_MICROS / MICROS,
        description="credits to add (at least 0.000001); negative takes some back",
    )
    note: str = Field("", max_length=200)


@router.get("/consumers")
async def list_consumers(admin: Administration = Admin) -> JSONResponse:
    """Every consumer with its limits, balance and number of active tokens."""
    return JSONResponse({"data": [consumer_json(c) for c in await admin.consumers()]})


@router.post("/consumers", status_code=201)
async def create_consumer(body: ConsumerBody, admin: Administration = Admin) -> JSONResponse:
    """Create a consumer (unmetered until credits are granted)."""
    info = await admin.create_consumer(body.name, rpm=body.rpm, ipm=body.ipm, note=body.note)
    return JSONResponse(consumer_json(info), status_code=201)


@router.get("/consumers/{name}", responses=NO_SUCH)
async def show_consumer(name: str, admin: Administration = Admin) -> JSONResponse:
    """One consumer."""
    return JSONResponse(consumer_json(await admin.consumer(name)))


@router.patch("/consumers/{name}", responses=NO_SUCH)
async def update_limits(name: str, body: LimitsBody, admin: Administration = Admin) -> JSONResponse:
    """Change a consumer's per-model rate limits (0 returns to the server default)."""
    return JSONResponse(consumer_json(await admin.set_limits(name, rpm=body.rpm, ipm=body.ipm)))


@router.put("/consumers/{name}/access", responses=NO_SUCH)
async def update_access(name: str, body: AccessBody, admin: Administration = Admin) -> JSONResponse:
    """Replace a consumer's priority ceiling, default start deadline and allowed models and LoRA adapters."""
    info = await admin.set_access(
        name,
        max_priority=body.max_priority,
        start_deadline=body.start_deadline,
        models=body.models,
        loras=body.loras,
    )
    return JSONResponse(consumer_json(info))


@router.get("/consumers/{name}/credits", responses=NO_SUCH)
async def show_credits(name: str, limit: int = 50, admin: Administration = Admin) -> JSONResponse:
    """A consumer's balance and its newest ledger entries."""
    found = await admin.credits(name, limit=limit)
    return JSONResponse(
        {
            "consumer": name,
            "balance": from_micros(found.balance),
            "metered": found.balance is not None,
            "ledger": [ledger_json(e) for e in found.ledger],
        }
    )


@router.post("/consumers/{name}/credits", responses=NO_SUCH)
async def grant_credits(name: str, body: GrantBody, admin: Administration = Admin) -> JSONResponse:
    """Add credits (metering starts with the first grant)."""
    balance = await admin.grant(name, to_micros(body.amount), note=body.note)
    return JSONResponse({"consumer": name, "balance": from_micros(balance), "metered": True})


@router.delete("/consumers/{name}/credits", responses=NO_SUCH)
async def unmeter(name: str, admin: Administration = Admin) -> JSONResponse:
    """Stop metering a consumer: unlimited credits from now on."""
    await admin.unmeter(name)
    return JSONResponse({"consumer": name, "balance": None, "metered": False})


@router.get("/tokens")
async def list_tokens(consumer: str | None = None, admin: Administration = Admin) -> JSONResponse:
    """Every token (never its secret), with its status and when it was last used."""
    return JSONResponse({"data": [token_json(t) for t in await admin.tokens(consumer)]})


@router.post("/tokens", status_code=201)
async def create_token(body: TokenBody, admin: Administration = Admin) -> JSONResponse:
    """A new token for a consumer (created if missing). The secret is in this response only."""
    issued = await admin.create_token(body.consumer, expires=body.expires, label=body.label, rpm=body.rpm, ipm=body.ipm)
    return JSONResponse(issued_json(issued), status_code=201)


@router.post("/tokens/{ident}/revoke", responses=NO_SUCH)
async def revoke_token(request: Request, ident: str, jobs: JobService = AdminJobs) -> JSONResponse:
    """Revoke a token by id or prefix, effective on the next request on every replica; the async jobs it
    submitted that have not finished are cancelled (``jobs``: as ``POST /admin/consumers/{name}/jobs/cancel``)."""
    info, views = await jobs.revoke_token(ident)
    return JSONResponse({**token_json(info), "jobs": cancelled_json(request, views)})


@router.post("/tokens/{ident}/rotate", status_code=201, responses=NO_SUCH)
async def rotate_token(ident: str, body: RotateBody | None = None, admin: Administration = Admin) -> JSONResponse:
    """A new token for the same consumer; the old one stays active until you revoke it."""
    body = body or RotateBody()
    issued = await admin.rotate_token(ident, expires=body.expires, label=body.label)
    return JSONResponse(issued_json(issued), status_code=201)


@router.post("/consumers/{name}/jobs/cancel")
async def cancel_consumer_jobs(
    request: Request, name: str, admin: Administration = Admin, jobs: JobService = AdminJobs
) -> JSONResponse:
    """Cancel every async job of a consumer that has not finished: queued ones now, running ones refunded."""
    await admin.consumer(name)  # an unknown name is a 404, not an empty list
    views = await jobs.cancel_jobs(consumer=name)
    return JSONResponse(cancelled_json(request, views))


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(request: Request, job_id: str, jobs: JobService = AdminJobs) -> JSONResponse:
    """Cancel one async job, whoever's it is (one already finished is answered as it is)."""
    views = await jobs.cancel_jobs(job_ids=[job_id])
    if views:
        return JSONResponse(cancelled_json(request, views))
    found = await jobs.find(job_id)
    if found is None or not found.asynchronous:
        raise NotFound(f"No async job with id '{job_id[:80]}'.", param="job_id")
    return JSONResponse({"data": [job_json(found)], "cancelled": 0, "stopping": 0})


@router.get("/usage")
async def show_usage(
    consumer: str | None = None, since: str | None = None, limit: int = 100, admin: Administration = Admin
) -> JSONResponse:
    """Totals per consumer and model, and the newest records (``since``: 24h, 7d or an ISO date)."""
    found = await admin.usage(consumer, since, limit=limit)
    summary, records = found.summary, found.records
    return JSONResponse(
        {
            "summary": [
                {
                    "consumer": s.consumer,
                    "model": s.model,
                    "requests": s.requests,
                    "failed": s.failed,
                    "images": s.images,
                    "pixels": s.pixels,
                    "seconds": round(s.seconds, 3),
                    "cost": from_micros(s.cost),
                }
                for s in summary
            ],
            "records": [usage_json(r) for r in records],
        }
    )
