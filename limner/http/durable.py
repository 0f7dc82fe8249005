"""``Idempotency-Key`` and ``Prefer: respond-async`` on every image POST route (see ``docs/jobs.md``).

``durable(translate)`` turns a dialect's translator (``limner.http.translation``) into the route's endpoint
(``routing.dialect_route`` does it for every POST route), so dialects stay translation only:

- no header: the request is translated, run and rendered (``translation.respond``);
- ``Idempotency-Key``: the key is claimed in the database before the request runs; a retry with the
  same key and request replays the kept response (``Idempotent-Replayed: true``), one with another
  request is a 422, one that arrives while the first runs waits for it: woken when the first ends
  (``limner.http.key_waits``), counted against its consumer's rate limits, and refused with a 409 past
  as many waiters per key and per consumer as the settings allow. A kept response is charged when it is
  stored (a retry would replay it), so the request's ``Delivery`` is settled right then;
- ``Prefer: respond-async``: the request is translated and checked as far as it can be without running
  it (``ImageService.check``), stored as a queued job (its ``ImageRequest`` and its dialect's ``Answer``),
  and answered 202 with the job. ``limner.service.job_runner`` runs it later through the same service and
  keeps what the dialect's renderer makes of its result.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import re
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from starlette.responses import StreamingResponse

from limner.accounts.tokens import Principal
from limner.core.errors import IdempotencyKeyInUse, IdempotencyKeyReused, InvalidRequest, LimnerError
from limner.http import jsonbody
from limner.http.auth import current_principal
from limner.http.context import current_request_id
from limner.http.deps import AppState, get_state
from limner.http.job_views import JobBody
from limner.http.key_waits import RETRY_SECONDS, Watch
from limner.http.translation import Translated, Translator, respond
from limner.service import job_requests, webhooks
from limner.service.accounting import delivery_var
from limner.service.job_object import job_body
from limner.service.job_service import JobService
from limner.service.job_shapes import JobView, StoredRequest, StoredResponse
from limner.service.stages.plan import Plan

Endpoint = Callable[[Request], Awaitable[Response]]

IDEMPOTENCY_HEADER = "idempotency-key"
WEBHOOK_HEADER = "limner-webhook-url"
REPLAYED_HEADER = "Idempotent-Replayed"
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_NOT_KEPT = frozenset({402, 408, 409, 425, 429, 499})
"""Answers a retry may change (credits topped up, a rate limit passed, the client gone): not replayed."""
_PER_ATTEMPT = ("content-length", "x-request-id")
WAIT_POLL_FIRST = 0.25
WAIT_POLL_MAX = 4.0
"""A waiter whose first request runs on another replica reads its row after 0.25 s, then twice as long
each time, up to every 4 s (the same replica wakes its waiters instead: ``limner.http.key_waits``)."""


OPENAPI_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x21-\\x7e]+$"},
        "description": "Replay this request's first response to retries with the same key and body for 24 hours "
        "(no new generation, no new charge; 422 idempotency_key_reused for another body or query). A retry "
        "while the first still runs waits for it; past the waiters allowed per key and per consumer: 409 "
        "idempotency_key_in_use with Retry-After.",
    },
    {
        "name": "Prefer",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "enum": ["respond-async"]},
        "description": "respond-async: answer 202 with a job at once (Location: /v1/jobs/{id}); the result "
        "is read from there.",
    },
    {
        "name": "Limner-Webhook-Url",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "format": "uri", "maxLength": 2048},
        "description": "With Prefer: respond-async: where the job's end is POSTed, signed the Standard Webhooks way.",
    },
]
"""The headers every durable route takes, as OpenAPI parameters (``routing.dialect_route`` adds them)."""
ACCEPTED_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "Prefer: respond-async: the job, queued (poll Location; see /v1/jobs).",
        "model": JobBody,
        "headers": {
            "Location": {"schema": {"type": "string"}, "description": "/v1/jobs/{id}"},
            "Preference-Applied": {"schema": {"type": "string"}},
        },
    }
}


def wants_async(prefer: str | None) -> bool:
    """``Prefer: respond-async`` (RFC 7240): alone, among other preferences, or with parameters
    (``respond-async; x=y``); several ``Prefer`` headers arrive joined with commas."""
    if not prefer:
        return False
    names = (part.split(";", 1)[0].split("=", 1)[0].strip().lower() for part in prefer.split(","))
    return "respond-async" in names


def _boundary(content_type: str) -> bytes | None:
    match = re.search(r'boundary="?([^";]+)"?', content_type, flags=re.IGNORECASE)
    return match.group(1).encode("latin-1") if match else None


def fingerprint(method: str, path: str, content_type: str, body: bytes, query: str = "") -> str:
    """What makes two requests the same: method, path, query string, media type, and the body with any
    multipart boundary blanked (a client that retries may encode the same form with a new boundary) and
    JSON in one canonical form (another client library may space or order the same object differently).
    The query's parameters are compared in order of name; an empty query adds nothing, so a request
    without one keeps the fingerprint it had before queries counted."""
    boundary = _boundary(content_type)
    if boundary:
        body = body.replace(boundary, b"")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if "json" in media_type:
        body = _canonical_json(body)
    parts = [method.upper().encode(), path.encode(), media_type.encode(), body]
    if query:
        pairs = sorted(parse_qsl(query, keep_blank_values=True), key=lambda pair: pair[0])  # repeats keep order
        parts.append(urlencode(pairs).encode())
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _canonical_json(body: bytes) -> bytes:
    """``body`` as sorted, compact JSON; unchanged if it is not JSON (the route refuses it anyway)."""
    try:
        return json.dumps(jsonbody.parse(body), sort_keys=True, separators=(",", ":")).encode()
    except (LimnerError, ValueError, RecursionError):
        return body


def _key(request: Request) -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not _KEY.match(key):
        raise InvalidRequest(
            "Invalid Idempotency-Key: use 1 to 255 visible ASCII characters (a UUID is a good choice).",
            param="Idempotency-Key",
        )
    return key


def kept_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """A response's headers as kept for replays: without its length (recomputed when it is sent again) and
    its request id (each attempt has its own)."""
    return [(name, value) for name, value in headers if name.lower() not in _PER_ATTEMPT]


def replay(response: StoredResponse, *, replayed: bool = True) -> Response:
    """A kept response as it was first sent, marked as a replay unless it is a job's result being read."""
    headers = dict(kept_headers(response.headers))
    if replayed:
        headers[REPLAYED_HEADER] = "true"
    return Response(response.body, status_code=response.status, headers=headers)


def accepted(view: JobView, *, replayed: bool = False) -> JSONResponse:
    """``202 Accepted`` with the job, where to poll it, and that the async preference was honoured."""
    headers = {"Location": f"/v1/jobs/{view.id}", "Preference-Applied": "respond-async"}
    if replayed:
        headers[REPLAYED_HEADER] = "true"
    return JSONResponse(job_body(view), status_code=202, headers=headers)


def status_of(code: str) -> int:
    """limner's own HTTP status for an error code (500 for one it does not know)."""
    pending: list[type[LimnerError]] = [LimnerError]
    while pending:
        kind = pending.pop()
        if kind.code == code:
            return kind.status
        pending.extend(kind.__subclasses__())
    return LimnerError.status


def kept(status: int) -> bool:
    return status < 500 and status not in _NOT_KEPT


def durable(translate: Translator) -> Endpoint:
    """The endpoint of ``translate``'s route, with idempotency keys and async submission (see the module doc)."""

    @functools.wraps(translate)
    async def handle(request: Request) -> Response:
        service = get_state(request).service
        key = _key(request)
        asynchronous = wants_async(",".join(request.headers.getlist("prefer")))
        webhook = request.headers.get(WEBHOOK_HEADER)
        if webhook is not None and not asynchronous:
            raise InvalidRequest(
                "Limner-Webhook-Url needs 'Prefer: respond-async': a webhook reports an async job's end.",
                param="Limner-Webhook-Url",
            )
        if key is None and not asynchronous:
            return await respond(service, await translate(request))
        return await _Durable(request, translate, key, asynchronous, webhook).handle()

    return handle


class _Durable:
    """One keyed or async request (see the module doc)."""

    def __init__(
        self, request: Request, translate: Translator, key: str | None, asynchronous: bool, webhook: str | None
    ):
        self.request = request
        self.translate = translate
        self._translated: Translated | None = None
        self.key = key
        self.asynchronous = asynchronous
        self.webhook = webhook
        self.state: AppState = get_state(request)
        principal = current_principal(request)
        if principal is None:  # dialect routes authenticate first; fail closed if one did not
            raise LimnerError("Internal error: a durable route ran without authentication.")
        self.principal: Principal = principal

    @property
    def jobs(self) -> JobService:
        return self.state.job_service

    async def handle(self) -> Response:
        body = await self.request.body()  # cached: the translator reads it again (also as a form)
        method, path, query = self.request.method, self.request.url.path, self.request.url.query
        digest = fingerprint(method, path, self.request.headers.get("content-type", ""), body, query)
        stored, webhook = job_requests.stored(method, path, query), None
        if self.asynchronous:
            await self._check()  # a refused request is answered at once, never queued
            webhook = await self._webhook_url()
            translated = await self.translated()
            stored = job_requests.stored(method, path, query, (translated.request, translated.answer))
        if self.key is None:
            return await self._open(stored, digest, webhook, None)
        with self.state.key_waits.watch(self.principal.consumer, self.key) as watch:
            return await self._open(stored, digest, webhook, watch)

    async def _open(self, stored: StoredRequest, digest: str, webhook: str | None, watch: Watch | None) -> Response:
        """Open the request's row and run it, or replay (or wait for) the one that holds its key."""
        deadline = time.monotonic() + self.state.settings.request_timeout
        admitted = False
        while True:
            changed = watch.mark() if watch is not None else None  # before the read: no change is missed
            opened = await self.jobs.open(
                consumer=self.principal.consumer,
                token_id=self.principal.token_id,
                key=self.key,
                fingerprint=digest,
                request=stored,
                asynchronous=self.asynchronous,
                webhook_url=webhook,
            )
            job = opened.job
            if opened.outcome == "reused":
                raise IdempotencyKeyReused(
                    f"Idempotency-Key '{self.key}' was already used with a different request; "
                    "send a new key for a new request.",
                    param="Idempotency-Key",
                )
            if opened.outcome == "new":
                if self.asynchronous:
                    self.state.wake_jobs()
                    return accepted(job)
                return await self._run_kept(job)
            if job.asynchronous:
                return accepted(job, replayed=True)
            if job.response is not None:
                return replay(job.response)
            if watch is None or changed is None:  # a row is found only by its key
                raise LimnerError("Internal error: a request without an Idempotency-Key found another's row.")
            with watch.waiting():  # bounded per key and per consumer (409 past either)
                if not admitted:
                    await self._admit_waiter()
                    admitted = True
                finished = await self._wait(job, watch, changed, deadline)
            if finished is not None and finished.response is not None:
                return replay(finished.response)
            # the first request failed in a way a retry may not: its key is free again; take it

    async def translated(self) -> Translated:
        """The request, translated by its dialect once (the check and the run share it)."""
        if self._translated is None:
            self._translated = await self.translate(self.request)
        return self._translated

    async def _check(self) -> Plan:
        """Translate the request and check it as far as can be done without running it (the error that
        refuses it is raised, and the route answers it in the dialect's envelope)."""
        return self.state.service.check((await self.translated()).request)

    async def _admit_waiter(self) -> None:
        """A duplicate about to wait counts against its consumer's rate limits as a request of its model
        (with no images: it makes none); the error that refuses it is raised."""
        plan = await self._check()
        await self.state.service.gate.admit_waiter(plan.request, plan.entry)

    async def _webhook_url(self) -> str | None:
        if self.webhook is None:
            return None
        return await webhooks.check_webhook_url(self.webhook, allow_private=self.state.settings.webhook_allow_private)

    async def _wait(self, job: JobView, watch: Watch, changed: asyncio.Event, deadline: float) -> JobView | None:
        """Wait for the first request with this key: its finished row, or None once its key was freed.

        Run here, it says when its row changes (``watch``), and the row is read once then; run on another
        replica, the row is read again with a backoff (the database is all the replicas share)."""
        delay = WAIT_POLL_FIRST
        while (remaining := deadline - time.monotonic()) > 0:
            here = job.instance_id == self.jobs.instance_id
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining if here else min(delay, remaining))
            delay = min(delay * 2, WAIT_POLL_MAX)
            changed = watch.mark()
            current = await self.jobs.find(job.id)
            if current is None or current.finished:
                return current
            job = current
        raise IdempotencyKeyInUse(
            f"A request with Idempotency-Key '{self.key}' is still running; retry later.",
            param="Idempotency-Key",
            retry_after=RETRY_SECONDS,
        )

    async def _run_kept(self, job: JobView) -> Response:
        """Run the request once for this key; keep (and charge) its answer, or free the key."""
        failure: LimnerError | None = None
        try:
            try:
                response = await respond(self.state.service, await self.translated())
            except LimnerError as error:
                render = getattr(self.request.scope.get("route"), "renderer_for", None)
                if render is None:
                    raise
                failure = error
                response = render(self.request)(error, current_request_id())
        except BaseException:
            await asyncio.shield(self._forget(job))
            raise
        if isinstance(response, StreamingResponse):
            # the iterator is read before it is replaced: ``_tee`` must not iterate itself
            response.body_iterator = self._tee(response.body_iterator, response, job, current_request_id())
            return response
        # a dialect may answer a retryable error with a status of its own (ImagineArt's 401 or AI.ML's 403
        # for insufficient credits): the error's own status decides whether a retry may do better
        status = failure.status if failure is not None else response.status_code
        await asyncio.shield(
            self._keep(job, status, response.status_code, list(response.headers.items()), bytes(response.body))
        )
        return response

    async def _tee(
        self, body: AsyncIterable[str | bytes | memoryview], response: StreamingResponse, job: JobView, request_id: str
    ) -> AsyncIterator[bytes]:
        """A streamed response (``body``, its original iterator), sent as it comes and kept once it ended whole;
        one whose generation failed after it started (an ``error`` event in a 200) is judged by that error."""
        chunks: list[bytes] = []
        complete = False
        try:
            async for chunk in body:
                data = chunk.encode(response.charset) if isinstance(chunk, str) else bytes(chunk)
                chunks.append(bytes(data))
                yield data
            complete = True
        finally:
            if complete:
                live = self.state.jobs.get(self.principal.consumer, request_id)
                failed = live.error if live is not None else None
                canonical = status_of(failed) if failed else response.status_code
                await asyncio.shield(
                    self._keep(job, canonical, response.status_code, list(response.headers.items()), b"".join(chunks))
                )
            else:
                await asyncio.shield(self._forget(job))

    async def _keep(
        self, job: JobView, canonical: int, status: int, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        """Store a response worth replaying and charge it in one transaction (a retry replays it, so it
        is delivered; a crash cannot separate the two); free the key of one that is not (a retry runs
        again). ``canonical``: limner's status for the error behind the response (``status`` itself for a
        success), which decides. Either way, the key's waiters here are woken."""
        if not kept(canonical):
            await self._forget(job)
            return
        delivery = delivery_var.get()
        try:
            response = StoredResponse(status, kept_headers(headers), bytes(body))
            await self.jobs.keep(job, response, delivery.settle_within if delivery is not None else None)
        finally:
            self._changed()
        if delivery is not None:
            await delivery.settle(True)  # anything that could not be written with it

    async def _forget(self, job: JobView) -> None:
        """Free the key (a retry runs again) and wake its waiters here, which take it."""
        try:
            await self.jobs.forget(job.id)
        finally:
            self._changed()

    def _changed(self) -> None:
        if self.key is not None:
            self.state.key_waits.changed(self.principal.consumer, self.key)
