"""One signed POST to a webhook receiver, with the same address checks as image URLs (``limner.media.fetch``).

The URL is checked when a job is submitted (``check_webhook_url``) and again at every try (``WebhookPoster``):
http(s) only, at most 2048 characters, and every address its host resolves to must be globally routable
unless private addresses are allowed. A try then connects to the vetted address itself (URL host rewritten
to the IP, original ``Host`` header, TLS SNI and certificate check against the name), so a DNS answer that
changes between check and connect (DNS rebinding) cannot redirect it. Redirects are never followed (a 3xx
is a failed try) and environment proxies are ignored (a proxy would resolve the name itself).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import httpx
from opentelemetry.trace import SpanKind

from limner.accounts.consumers import WEBHOOK_SECRET_PREFIX as SECRET_PREFIX
from limner.accounts.models import utcnow
from limner.core.errors import InvalidRequest
from limner.core.tracing import annotate, fail, span
from limner.media.fetch import Resolver, UnsafeHost, safe_url, system_resolver, vetted_addresses

log = logging.getLogger(__name__)

PARAM = "Limner-Webhook-Url"
MAX_URL_LENGTH = 2048
USER_AGENT = "limner-webhooks"


def signatures(secrets: Sequence[str], event_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per secret, space-separated (a receiver accepts any
    that matches, so both sides of a secret rotation verify during its grace period)."""
    return " ".join(sign(secret, event_id, timestamp, body) for secret in secrets)


def sign(secret: str, event_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` under the decoded ``whsec_`` secret."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    mac = hmac.new(key, f"{event_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def _host(url: str) -> str:
    """The host a webhook URL names, for its span; '' for one that is not a URL."""
    try:
        return httpx.URL(url[:MAX_URL_LENGTH]).host
    except (httpx.InvalidURL, TypeError, ValueError):
        return ""


class _Failed(Exception):
    """Why a try got no HTTP status (the text goes into the attempt log, so it names no secret)."""


async def _vetted(url: str, allow_private: bool, resolver: Resolver) -> tuple[httpx.URL, list[str]]:
    """The parsed URL and the addresses it may be sent to; ``_Failed`` saying why not."""
    if len(url) > MAX_URL_LENGTH:
        raise _Failed(f"URL longer than {MAX_URL_LENGTH} characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise _Failed("not a valid URL") from None
    if not parsed.scheme:
        raise _Failed("not a valid URL (use an absolute http or https URL)")
    if parsed.scheme not in ("http", "https"):
        raise _Failed(f"unsupported URL scheme {parsed.scheme!r}; use http or https")
    try:
        return parsed, await vetted_addresses(parsed, resolver, allow_private=allow_private)
    except UnsafeHost as unsafe:
        if unsafe.address is not None:
            raise _Failed(f"refusing to send to {safe_url(parsed)}: {unsafe.reason}") from None
        raise _Failed(unsafe.reason) from None


async def check_webhook_url(url: str, *, allow_private: bool, resolver: Resolver = system_resolver) -> str:
    """``url`` if events may be sent there, else ``InvalidRequest`` on ``Limner-Webhook-Url`` saying why."""
    try:
        await _vetted(url, allow_private, resolver)
    except _Failed as failed:
        log.info("refused webhook URL %s: %s", safe_url(url), failed)
        raise InvalidRequest(f"{PARAM}: {failed}", param=PARAM) from None
    return url


@dataclass(frozen=True)
class Outcome:
    """One try: the receiver's status, or why there was none; when it started and ended."""

    status_code: int | None
    error: str | None
    started: datetime
    ended: datetime

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def seconds(self) -> float:
        return (self.ended - self.started).total_seconds()


class WebhookPoster:
    """Makes single tries; holds no connection between them (a connection whose certificate was checked
    for one host name must not carry a request for another)."""

    def __init__(self, *, timeout: float, allow_private: bool, resolver: Resolver | None = None) -> None:
        self.timeout = timeout
        self.allow_private = allow_private
        self._resolver: Resolver = resolver or system_resolver
        self._ssl_context: ssl.SSLContext | None = None

    async def post(self, url: str, event_id: str, body: bytes, secrets: Sequence[str]) -> Outcome:
        """One POST of ``body`` to ``url`` (checked again now) signed with each of ``secrets``, within ``timeout``."""
        started = utcnow()
        status: int | None = None
        error: str | None = None
        attributes = {"http.request.method": "POST", "server.address": _host(url), "limner.webhook_id": event_id}
        with span("webhook POST", attributes, kind=SpanKind.CLIENT) as delivering:
            try:
                async with asyncio.timeout(self.timeout):
                    status = await self._send(url, event_id, body, secrets)
            except _Failed as failed:
                error = str(failed)
            except TimeoutError:
                error = f"timed out after {self.timeout:g} s"
            if status is not None:
                annotate(delivering, {"http.response.status_code": status})
            if error is not None or status is None or not 200 <= status < 300:
                fail(delivering, error or f"HTTP {status}")
        outcome = Outcome(status, error, started, utcnow())
        log.info("webhook %s to %s: %s", event_id, safe_url(url), error or f"HTTP {status}")
        return outcome

    def _client(self) -> httpx.AsyncClient:
        if self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context()
        transport = httpx.AsyncHTTPTransport(verify=self._ssl_context, retries=0)
        return httpx.AsyncClient(transport=transport, timeout=self.timeout, follow_redirects=False, trust_env=False)

    async def _send(self, url: str, event_id: str, body: bytes, secrets: Sequence[str]) -> int:
        target, addresses = await _vetted(url, self.allow_private, self._resolver)
        timestamp = int(time.time())
        headers = {
            "Host": target.netloc.decode("ascii"),
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "webhook-id": event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signatures(secrets, event_id, timestamp, body),
        }
        extensions = {"sni_hostname": target.raw_host.decode("ascii")} if target.scheme == "https" else {}
        for index, address in enumerate(addresses):
            try:
                async with (
                    self._client() as client,
                    client.stream(
                        "POST", target.copy_with(host=address), content=body, headers=headers, extensions=extensions
                    ) as response,
                ):
                    return response.status_code  # the body is never read: only the status counts
            except httpx.ConnectError:
                if index == len(addresses) - 1:
                    raise _Failed("could not connect") from None
            except httpx.TimeoutException:
                raise _Failed(f"timed out after {self.timeout:g} s") from None
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                raise _Failed(f"connection error ({type(exc).__name__})") from None
        raise AssertionError("unreachable: _vetted never returns an empty list")
