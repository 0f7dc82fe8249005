"""Everything a handler needs lives on ``app.state.limner``; these aliases make a signature its wiring.

Authentication: every route built by ``limner.http.routing.dialect_route`` is an ``AuthenticatedRoute``
(the bearer token is checked before the handler runs, errors rendered in the dialect's envelope);
``get_consumer`` then names the caller. Mark an endpoint that must stay open with ``@public``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

from limner.accounts.service import Accounts
from limner.core.errors import LimnerError
from limner.engines.catalog import Catalog
from limner.http.auth import AuthenticatedRoute, authenticate, current_principal, public
from limner.http.key_waits import KeyWaits
from limner.media.inputs import ImageLoader
from limner.media.signing import UrlSigner
from limner.media.store import MediaStore
from limner.service.image_service import ImageService
from limner.service.job_service import JobService
from limner.service.jobs import JobRegistry
from limner.service.metrics import Metrics
from limner.settings import Settings

if TYPE_CHECKING:
    from limner.service.job_runner import JobRunner


@dataclass
class AppState:
    settings: Settings
    catalog: Catalog
    store: MediaStore
    signer: UrlSigner
    loader: ImageLoader
    service: ImageService
    started: int
    """Unix time the app was built; reported as the models' creation time."""
    accounts: Accounts
    metrics: Metrics
    key_waits: KeyWaits
    """Requests waiting here for the first request with their ``Idempotency-Key`` (``limner.http.durable``)."""
    job_service: JobService
    """Durable jobs and idempotency keys (the database behind them): all ``limner.http`` knows of them."""
    runner: JobRunner | None = None
    """This process's async job runner (``limner.service.job_runner``), set when the app starts."""

    def wake_jobs(self) -> None:
        """A job was queued: let this process's runner look for it now."""
        if self.runner is not None:
            self.runner.wake()

    @property
    def jobs(self) -> JobRegistry:
        """Every request's progress (``ImageService.jobs``): streams and ``GET /v1/jobs/{id}`` read it."""
        return self.service.jobs


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.limner
    return state


def get_consumer(request: Request) -> str:
    """The authenticated consumer's name (``local`` while the server is open on loopback).

    Fails closed: a route that did not authenticate (not built with ``dialect_route``, nor depending
    on ``authenticate``) gets an internal error here instead of serving an anonymous caller."""
    principal = current_principal(request)
    if principal is None:
        raise LimnerError(
            "Internal error: this route is not behind limner's authentication "
            "(build its router with limner.http.routing.dialect_route)."
        )
    return principal.consumer


__all__ = [
    "AppState",
    "AuthenticatedRoute",
    "authenticate",
    "get_consumer",
    "get_state",
    "public",
]
