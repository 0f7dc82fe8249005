"""How an upstream engine calls its provider: one logical HTTP request per ``send``, with the credential
added (only for the provider's own origin), retried with backoff on 429/5xx/connection errors honouring
``Retry-After``, guarded by a circuit breaker, and every failure translated into a limner error with the
provider's message redacted and shortened.

``ProviderCalls`` is a part of ``UpstreamEngine`` (``limner.engines.upstream.base``), which builds the client,
breaker and limits it uses; the hooks a provider overrides to read its own error bodies live here, beside
the code that calls them.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
from opentelemetry.trace import SpanKind
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from limner.core.errors import LimnerError, ModelAuthError, ModelError, ModelNotAvailable, RateLimited, Timeout
from limner.core.tracing import annotate, span
from limner.engines.catalog import ModelEntry
from limner.engines.upstream.credentials import Credential
from limner.engines.upstream.resilience import CircuitBreaker, backoff_delay, parse_retry_after, redact
from limner.engines.upstream.usage import current_stats

log = logging.getLogger(__name__)


@dataclass
class Transient(Exception):
    """A failure worth retrying; ``error`` is what the caller gets once retries run out."""

    def __init__(self, error: LimnerError, retry_after: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after


class ProviderCalls:
    """Sending requests to one provider (see the module doc)."""

    provider: ClassVar[str]
    entry: ModelEntry
    model: str
    client: httpx.AsyncClient
    breaker: CircuitBreaker
    backoff: float
    max_backoff: float
    max_retry_after: float
    max_bytes: int
    _credential: Credential
    _endpoint: Callable[[str], httpx.URL]
    _merged: Callable[[tuple[tuple[str, str], ...]], httpx.Headers]

    # --- what a provider may override -------------------------------------------------------------

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def error_message(self, payload: Any) -> str | None:
        """The human message in an error body: OpenAI/AI.ML/ImagineArt ``{"error": {"message"}}``,
        Milady ``{"error": "..."}``, FastAPI ``{"detail": ...}``."""
        if not isinstance(payload, dict):
            return None
        error = payload.get("error", payload)
        if isinstance(error, str):
            return error
        if isinstance(error, dict):
            for key in ("message", "detail"):
                if isinstance(error.get(key), str):
                    return str(error[key])
        detail = payload.get("detail")
        return detail if isinstance(detail, str) else None

    def error_code(self, payload: Any) -> str | None:
        if isinstance(payload, dict):
            error = payload.get("error")
            code = error.get("code") if isinstance(error, dict) else payload.get("code")
            return code if isinstance(code, str) else None
        return None

    def is_unknown_model(self, status: int, payload: Any) -> bool:
        return status == 404 or self.error_code(payload) in ("model_not_found", "model_not_available")

    def is_auth_error(self, status: int, payload: Any) -> bool:
        return status in (401, 403)

    def trusts(self, url: str) -> bool:
        """Whether ``url`` may receive the credential: relative URLs and the provider's own origin."""
        if not url.startswith(("http://", "https://")):
            return True
        target, base = httpx.URL(url), self.client.base_url
        return (target.scheme, target.host, target.port) == (base.scheme, base.host, base.port)

    # --- for providers ----------------------------------------------------------------------------

    async def send(self, method: str, url: str, *, authorized: bool = True, **kwargs: Any) -> httpx.Response:
        """One logical request to the provider; a 2xx response, or a limner error."""
        headers = dict(kwargs.pop("headers", None) or {})
        if authorized and self._credential.value:
            if not self.trusts(url):
                raise ModelError(f"Provider '{self.provider}' pointed limner at another host.")
            headers.update(self.auth_headers(self._credential.value))
        try:
            # The first attempt runs outside the retry loop, which costs more than building the request;
            # its failure is replayed as the loop's first attempt, so retries go exactly as they would.
            try:
                return await self._attempt(method, url, headers, kwargs)
            except Transient as exc:
                failed: Transient | None = exc
            retrying = AsyncRetrying(
                stop=stop_after_attempt(self.entry.max_retries + 1),
                wait=self._wait,
                retry=retry_if_exception(self._should_retry),
                reraise=True,
            )
            async for attempt in retrying:
                with attempt:
                    if failed is not None:
                        replayed, failed = failed, None
                        raise replayed
                    current_stats.get().retries += 1
                    return await self._attempt(method, url, headers, kwargs)
        except Transient as exc:
            raise exc.error from None
        raise AssertionError("unreachable: tenacity either returns, retries or re-raises")

    def json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ModelError(f"Provider '{self.provider}' answered with malformed JSON.") from None

    # --- internals --------------------------------------------------------------------------------

    def _request(self, method: str, url: str, headers: dict[str, str], kwargs: dict[str, Any]) -> httpx.Request:
        """What ``client.build_request`` builds (the client's headers and timeout, the endpoint against its
        base URL), from the endpoints and header sets built before. Absolute URLs (a provider's polling
        links) are left to httpx."""
        target = url if url.startswith(("http://", "https://")) else self._endpoint(url)
        extensions = {"timeout": self.client.timeout.as_dict()}
        merged = self._merged(tuple(headers.items()))
        return httpx.Request(method, target, headers=merged, extensions=extensions, **kwargs)

    def _absolute(self, endpoint: str) -> httpx.URL:
        """A relative ``endpoint`` against the provider's base URL, as httpx merges them."""
        base = self.client.base_url
        return base.copy_with(raw_path=base.raw_path + httpx.URL(endpoint).raw_path.lstrip(b"/"))

    def _merge(self, headers: tuple[tuple[str, str], ...]) -> httpx.Headers:
        """The client's headers with a call's on top (``httpx.Request`` copies them, so one may serve all)."""
        merged = httpx.Headers(self.client.headers)
        merged.update(dict(headers))
        return merged

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        delay = backoff_delay(state.attempt_number, self.backoff, self.max_backoff)
        if isinstance(error, Transient) and error.retry_after is not None:
            return max(error.retry_after, delay)
        return delay

    def _should_retry(self, error: BaseException) -> bool:
        if not isinstance(error, Transient) or self.breaker.is_open:
            return False
        return error.retry_after is None or error.retry_after <= self.max_retry_after

    async def _attempt(self, method: str, url: str, headers: dict[str, str], kwargs: dict[str, Any]) -> httpx.Response:
        blocked = self.breaker.blocked_for()
        if blocked:
            raise ModelNotAvailable(
                f"Provider '{self.provider}' is failing; retry in {math.ceil(blocked)} s.", retry_after=blocked
            )
        current_stats.get().requests += 1
        request = self._request(method, url, headers, kwargs)
        host = request.url.host
        attributes = {"limner.provider": self.provider, "http.request.method": method, "server.address": host}
        with span(f"{self.provider} {method}", attributes, kind=SpanKind.CLIENT) as calling:
            try:
                async with asyncio.timeout(self.entry.timeout):
                    response = await self.client.send(request, stream=True)
                    try:
                        body = await self._read(response)
                    finally:
                        await response.aclose()
            except (TimeoutError, httpx.TimeoutException) as exc:
                self.breaker.failure()
                if isinstance(exc, httpx.ConnectTimeout):
                    raise Transient(ModelError(f"Could not connect to provider '{self.provider}' in time.")) from None
                raise Timeout(f"Provider '{self.provider}' did not answer within {self.entry.timeout:g} s.") from None
            except httpx.TransportError as exc:
                self.breaker.failure()
                log.info("provider %s: %s on %s %s", self.provider, type(exc).__name__, method, request.url.path)
                reason = f"Could not reach provider '{self.provider}' ({type(exc).__name__})."
                raise Transient(ModelError(reason)) from None
            result = httpx.Response(response.status_code, headers=response.headers, content=body, request=request)
            annotate(calling, {"http.response.status_code": response.status_code})
            self._check(result)
            return result

    async def _read(self, response: httpx.Response) -> bytes:
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > self.max_bytes:
                raise ModelError(f"Provider '{self.provider}' sent more than {self.max_bytes} bytes.")
        return bytes(body)

    def _check(self, response: httpx.Response) -> None:
        """Raise the limner error for a non-2xx answer; keep the breaker informed either way."""
        status = response.status_code
        if 200 <= status < 300:
            self.breaker.success()
            return
        try:
            payload: Any = response.json()
        except ValueError:
            payload = None
        shown = self._safe_message(response, payload)
        suffix = f": {shown}" if shown else ""
        provider = self.provider
        if (status == 429 or status >= 500) and not self.is_unknown_model(status, payload):
            self.breaker.failure()
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            if status == 429:
                message = f"Provider '{provider}' is throttling requests{suffix}"
                raise Transient(RateLimited(message, retry_after=retry_after or 1.0), retry_after)
            raise Transient(ModelError(f"Provider '{provider}' failed (HTTP {status}){suffix}"), retry_after)
        self.breaker.success()
        if self.is_auth_error(status, payload):
            log.warning("provider %s rejected the credentials of model %s (HTTP %d)", provider, self.entry.id, status)
            raise ModelAuthError(f"Provider '{provider}' rejected limner's credentials (HTTP {status}).")
        if self.is_unknown_model(status, payload):
            message = f"Provider '{provider}' does not offer model '{self.model}' (HTTP {status}){suffix}"
            raise ModelNotAvailable(message)
        raise ModelError(f"Provider '{provider}' rejected the request (HTTP {status}){suffix}")

    def _safe_message(self, response: httpx.Response, payload: Any) -> str:
        message = self.error_message(payload) if payload is not None else None
        if message is None and response.headers.get("content-type", "").startswith("text/plain"):
            message = response.text
        secrets = [self._credential.value] if self._credential.value else []
        return redact(message, secrets) if message else ""
