"""Tokens sent over plain HTTP, for dialects whose reference revokes them ("Use HTTPS exclusively. Tokens
transmitted over plain HTTP are immediately revoked": ImagineArt).

A dialect declares ``tokens = "https-only"`` (``limner.http.dialect``). A request that reaches such a dialect over plain
HTTP from beyond this machine with a valid token gets that token revoked in the database (here at once,
on every other replica within ``accounts_cache_seconds``), its unfinished async jobs cancelled like any
revoked token's (``limner.service.job_cancel``), and a 401 ``invalid_token`` saying why. A
request counts as HTTPS when limner terminated TLS itself (``limner serve --tls-cert``), or when it came from one of
``LIMNER_TRUSTED_PROXIES`` with ``X-Forwarded-Proto: https``; that header from anyone else is ignored.
The peer decides, not the bind: a request from a loopback address that no proxy relayed (no
``X-Forwarded-For``, ``Forwarded``, ...) never crossed a network, whatever address the server listens on,
while one relayed by a proxy on this machine may have. ``LIMNER_PLAIN_HTTP_TOKENS=allow`` turns the
revocation off (a private network without TLS, knowingly).

Where the dialect is known before authentication (a route of its own), ``authenticate`` checks it;
where a shared path picks the dialect after reading the body, ``limner.http.routing.rendered`` does.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from dataclasses import dataclass

from fastapi import Request

from limner.accounts.tokens import Principal
from limner.core.errors import InvalidToken
from limner.http import proxies
from limner.service.job_service import JobService
from limner.settings import Settings

log = logging.getLogger(__name__)


def over_plain_http(request: Request, settings: Settings) -> bool:
    """Whether this request reached limner unencrypted from beyond this machine."""
    if proxies.from_this_machine(request.scope):
        return False
    return proxies.scheme(request.scope, settings.trusted_proxies) not in proxies.SECURE_SCHEMES


@dataclass(frozen=True)
class Exposed:
    """A valid token that arrived over plain HTTP: what revoking it needs."""

    job_service: JobService
    principal: Principal

    async def revoke(self) -> InvalidToken:
        """Revoke the token now; the error to answer with."""
        token_id = self.principal.token_id
        if token_id is not None:
            await self.job_service.revoke_token(str(token_id))
            log.warning("token %s of %s was sent over plain HTTP and is revoked", token_id, self.principal.consumer)
        return InvalidToken(
            "This API token was sent over plain HTTP, so it has been revoked: tokens must travel over HTTPS "
            "only. Create a new token and call this server at an https:// address."
        )


exposed_var: ContextVar[Exposed | None] = ContextVar("limner_exposed_token", default=None)
"""Set by ``authenticate`` for a token-bearing request over plain HTTP (when revocation is on)."""


def note_transport(
    request: Request, settings: Settings, job_service: JobService, principal: Principal
) -> Exposed | None:
    """After authentication: remember a token that came over plain HTTP, for an HTTPS-only dialect to revoke."""
    if principal.token_id is None or settings.plain_http_tokens != "revoke":
        return None
    if not over_plain_http(request, settings):
        return None
    exposed = Exposed(job_service, principal)
    exposed_var.set(exposed)
    return exposed
