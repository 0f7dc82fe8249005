"""The dialect contract: what the app needs of each HTTP dialect to mount it and answer in its voice.

A dialect (``limner.dialects.<vendor>``) is one object that says:

- ``name``: its key in ``settings.mounts`` (``"openai"``; a dialect missing there is not mounted);
- ``routes(mount)``: its ``APIRouter``, built with ``limner.http.routing.dialect_route(dialect)``;
- ``errors`` and ``render_error``: its error table (limner code -> status, or a tuple starting with it)
  and the envelope every error comes in;
- how it reports auth failures: through the same ``render_error``, before its endpoint runs (the route
  authenticates first), with the status its table gives ``missing_bearer_token``, ``invalid_token`` and
  ``forbidden`` (ImagineArt's reference has no 403: its table says 401 ``invalid_token``);
- ``renderer``: how it answers the image requests its routes translated (``limner.http.translation``): the
  route renders with it at once, the job runner when an async job ends (``limner.http.job_answers``);
- ``tokens``: its token policy. ``"https-only"``: a valid token that reaches it over plain HTTP from beyond
  this machine is revoked and answered 401 (``limner.http.transport``); ``"any"``: no such rule.

``limner.dialects.registry`` lists the dialects ``create_app`` mounts. Routes that are no vendor's (the
jobs API, the playground's helper) and envelopes chosen per request (the shared paths) need only the
``Envelope`` part: ``Errors`` wraps a render function as one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from fastapi import APIRouter, Response

from limner.core.errors import LimnerError
from limner.http.translation import Renderer

ErrorRenderer = Callable[[LimnerError, str], Response]
"""``render_error(error, request_id)``: the error as a response in one envelope."""
TokenPolicy = Literal["any", "https-only"]


class Envelope(Protocol):
    """What a dialect route needs of its dialect: how its errors look, and whether its tokens may travel
    over plain HTTP."""

    @property
    def tokens(self) -> TokenPolicy: ...

    def render_error(self, error: LimnerError, request_id: str) -> Response: ...


@dataclass(frozen=True)
class Mount:
    """Where the app mounts a dialect: its path ``prefix`` ('' is the root), and whether the paths it shares
    with another dialect at that prefix are served by the shared router instead (``shared``)."""

    prefix: str
    shared: bool = False


class Dialect(Envelope, Protocol):
    """One HTTP dialect (see the module docstring)."""

    @property
    def name(self) -> str: ...

    @property
    def errors(self) -> Mapping[str, int | tuple[Any, ...]]: ...

    @property
    def renderer(self) -> Renderer | None: ...

    def routes(self, mount: Mount) -> APIRouter: ...


@dataclass(frozen=True)
class VendorDialect:
    """A ``Dialect`` made of its parts: its name, error table and envelope, token policy, and a function that
    builds its router for a mount (given the dialect itself, which its routes render errors through)."""

    name: str
    errors: Mapping[str, int | tuple[Any, ...]]
    render: ErrorRenderer
    router: Callable[[VendorDialect, Mount], APIRouter]
    tokens: TokenPolicy = "any"
    renderer: Renderer | None = None
    """How it answers the image requests it translated (``limner.http.translation``), also for async jobs."""

    def render_error(self, error: LimnerError, request_id: str) -> Response:
        return self.render(error, request_id)

    def routes(self, mount: Mount) -> APIRouter:
        return self.router(self, mount)


@dataclass(frozen=True)
class Errors:
    """An ``Envelope`` from a render function: for routes that belong to no dialect, or an envelope a route
    picks per request."""

    render: ErrorRenderer
    tokens: TokenPolicy = "any"

    def render_error(self, error: LimnerError, request_id: str) -> Response:
        return self.render(error, request_id)


def https_only(envelope: Envelope) -> bool:
    """Whether ``envelope``'s dialect revokes a token sent over plain HTTP."""
    return envelope.tokens == "https-only"
