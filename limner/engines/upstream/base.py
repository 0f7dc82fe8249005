"""``UpstreamEngine``: what every hosted-provider engine shares, so that a provider module is only
its wire format.

A provider subclass sets ``provider`` and ``default_url``, builds its ``capabilities`` for its model
in ``__init__``, and implements ``_generate`` with the helpers here: ``send`` (one logical HTTP
request: credentials added, retried with backoff on 429/5xx/connection errors honouring
``Retry-After``, guarded by a circuit breaker, errors translated), ``json``, ``download`` (result
URLs through the SSRF-safe ``ImageFetcher``), ``decode`` / ``decode_b64`` (``ImageDecoder`` limits),
and ``fan_out`` (one upstream call per seed, for providers that make one image per call). It may
override ``auth_headers``, ``error_message``, ``is_unknown_model``, ``is_auth_error`` and ``trusts``.

Errors leave an engine as limner errors only: credentials rejected -> ``ModelAuthError``, unknown
model -> ``ModelNotAvailable``, any other failure -> ``ModelError`` (upstream message redacted and
shortened), throttled past the retries -> ``RateLimited``, no answer in time -> ``Timeout``.
The credential is read once from the environment or a file (``credentials``); it is sent only to
the provider's own origin and never appears in messages, logs or ``repr``. Cancelling
``generate`` cancels the HTTP request in flight (httpx closes its connection).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import httpx
from opentelemetry.trace import SpanKind
from PIL import Image
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from limner import __version__
from limner.core.errors import (
    InvalidImage,
    LimnerError,
    ModelAuthError,
    ModelError,
    ModelNotAvailable,
    RateLimited,
    Timeout,
)
from limner.core.models import Capabilities, EngineRequest, GeneratedImage
from limner.core.tracing import annotate, span
from limner.engines.base import Engine
from limner.engines.catalog import ModelEntry
from limner.engines.upstream.credentials import Credential, load_credential
from limner.engines.upstream.payloads import INLINE_BYTES
from limner.engines.upstream.resilience import CircuitBreaker, backoff_delay, parse_retry_after, redact
from limner.engines.upstream.transport import provider_transport
from limner.engines.upstream.usage import CallObserver, CallStats, Outcome, UpstreamCall
from limner.media.encode import open_plain_png, remember_source
from limner.media.inputs import ImageDecoder, ImageFetcher, decode_base64, parse_data_url

log = logging.getLogger(__name__)

MAX_REMEMBERED = 64
"""Endpoint URLs and header sets each engine keeps built (a provider has a handful of each)."""

_stats: ContextVar[CallStats] = ContextVar("limner_upstream_call")
"""Counters of the ``generate`` call in progress; fanned-out tasks share them (context is copied)."""


def hosted_capabilities(**fields: Any) -> Capabilities:
    """What a hosted provider takes, from the defaults most providers share: no masks, seeds or negative
    prompts, 1024x1024 by default, sides of 64 to 4096 pixels in multiples of 8."""
    defaults: dict[str, Any] = {
        "supports_mask": False,
        "supports_seed": False,
        "supports_negative_prompt": False,
        "default_size": (1024, 1024),
        "min_side": 64,
        "max_side": 4096,
        "size_multiple": 8,
        "max_pixels": 4096 * 4096,
    }
    return Capabilities(**(defaults | fields))


@dataclass
class _Transient(Exception):
    """A failure worth retrying; ``error`` is what the caller gets once retries run out."""

    def __init__(self, error: LimnerError, retry_after: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after


class UpstreamEngine(Engine):
    """An engine whose images come from a hosted provider over HTTP."""

    provider: ClassVar[str] = "upstream"
    default_url: ClassVar[str] = ""

    def __init__(
        self,
        entry: ModelEntry,
        credential: Credential | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.entry = entry
        self.model = entry.upstream_model or entry.id
        self.base_url = (entry.provider_url or self.default_url).rstrip("/")
        if not self.base_url:
            raise ValueError(f"model '{entry.id}' needs a 'provider_url' for engine '{entry.engine}'")
        self._credential = credential if credential is not None else load_credential(entry)
        options = entry.options
        self.breaker = CircuitBreaker(options.breaker_threshold, options.breaker_cooldown)
        self.backoff = options.backoff
        self.max_backoff = options.max_backoff
        self.max_retry_after = options.max_retry_after
        max_bytes = self.max_bytes = options.max_bytes
        self.decoder = ImageDecoder(max_bytes=max_bytes, max_pixels=options.max_pixels)
        self.fetcher = ImageFetcher(allow_private=entry.allow_private_urls, max_bytes=max_bytes, timeout=entry.timeout)
        trust_env = options.trust_env
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=max(20, 2 * entry.max_concurrency))
        self.client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=entry.timeout,
            transport=transport or provider_transport(limits=limits),
            follow_redirects=False,
            trust_env=trust_env,
            limits=limits,
            headers={"User-Agent": f"limner/{__version__}"},
        )
        self.calls: deque[UpstreamCall] = deque(maxlen=256)
        """The most recent calls, newest last; ``subscribe`` to see every one."""
        # Parsing a URL and merging headers cost more than the rest of building a request, and httpx does
        # both for every request: here each endpoint and each set of call headers is done once.
        self._endpoint = functools.lru_cache(maxsize=MAX_REMEMBERED)(self._absolute)
        self._merged = functools.lru_cache(maxsize=MAX_REMEMBERED)(self._merge)
        self._observers: list[CallObserver] = []
        if self._credential.problem:
            log.warning("model '%s': %s; its requests fail with model_auth_error", entry.id, self._credential.problem)

    @classmethod
    def from_entry(cls, entry: ModelEntry) -> Self:
        """The engine factory the registry uses."""
        return cls(entry)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.entry.id!r}, upstream={self.model!r}, url={self.base_url!r})"

    # --- what a provider implements or overrides -------------------------------------------------

    async def _generate(self, request: EngineRequest) -> list[GeneratedImage]:
        raise NotImplementedError

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

    # --- the engine interface ---------------------------------------------------------------------

    def subscribe(self, observer: CallObserver) -> None:
        """Call ``observer`` with an ``UpstreamCall`` after every ``generate`` (usage and cost); once,
        however often it subscribes (an engine can be reached directly and as another's fallback)."""
        if observer not in self._observers:
            self._observers.append(observer)

    async def generate(self, request: EngineRequest) -> list[GeneratedImage]:
        stats = CallStats()
        token = _stats.set(stats)
        started, wall = time.perf_counter(), time.time()
        outcome: Outcome = "error"
        code: str | None = None
        images: list[GeneratedImage] = []
        try:
            if self._credential.problem:
                raise ModelAuthError(f"Model '{self.entry.id}' has no upstream credentials configured.")
            images = await self._generate(request)
            outcome = "ok"
            return images
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except LimnerError as exc:
            code = exc.code
            raise
        except Exception as exc:  # an answer shaped unlike the wire format: a provider bug, or ours
            code = "model_error"
            log.exception("provider %s: unexpected answer for model %s", self.provider, self.entry.id)
            raise ModelError(f"Provider '{self.provider}' returned an answer limner could not use.") from exc
        finally:
            _stats.reset(token)
            cost = self.entry.price_for(len(images), request.width, request.height, request.quality)
            self._record(
                UpstreamCall(
                    provider=self.provider,
                    model=self.entry.id,
                    upstream_model=self.model,
                    outcome=outcome,
                    started=wall,
                    latency=time.perf_counter() - started,
                    requests=stats.requests,
                    retries=stats.retries,
                    images=len(images),
                    cost=cost if outcome == "ok" else 0.0,
                    error=code,
                )
            )

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.fetcher.aclose()

    def _record(self, call: UpstreamCall) -> None:
        self.calls.append(call)
        log.log(
            logging.INFO if call.outcome != "ok" or call.retries else logging.DEBUG,
            "upstream %s model=%s outcome=%s error=%s latency=%.3fs requests=%d retries=%d images=%d cost=%g",
            call.provider,
            call.model,
            call.outcome,
            call.error,
            call.latency,
            call.requests,
            call.retries,
            call.images,
            call.cost,
        )
        for observer in self._observers:
            try:
                observer(call)
            except Exception:
                log.exception("an upstream call observer failed")

    # --- helpers for providers --------------------------------------------------------------------

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
            except _Transient as exc:
                failed: _Transient | None = exc
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
                    _stats.get().retries += 1
                    return await self._attempt(method, url, headers, kwargs)
        except _Transient as exc:
            raise exc.error from None
        raise AssertionError("unreachable: tenacity either returns, retries or re-raises")

    def json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ModelError(f"Provider '{self.provider}' answered with malformed JSON.") from None

    async def download(self, url: str, label: str = "image") -> bytes:
        """A result image by URL (relative ones against the provider), with the fetcher's address checks."""
        _stats.get().requests += 1
        absolute = str(self.client.base_url.join(url)) if not url.startswith(("http://", "https://")) else url
        try:
            return await self.fetcher.fetch(absolute, f"{self.provider} {label}")
        except InvalidImage as exc:
            log.warning("provider %s: %s", self.provider, exc.message)
            raise ModelError(f"Provider '{self.provider}' returned an image URL limner could not download.") from None

    async def decode(self, data: bytes, label: str = "image") -> Image.Image:
        try:
            if len(data) <= INLINE_BYTES:
                return self._open(data, label)
            # checking or decoding megabytes takes long enough to stall every other request
            return await asyncio.to_thread(self._open, data, label)
        except InvalidImage as exc:
            raise ModelError(f"Provider '{self.provider}' returned an invalid image ({exc.message}).") from None

    def _open(self, data: bytes, label: str) -> Image.Image:
        """The provider's image. A plain PNG stays undecoded until something needs its pixels: passed
        through as sent, it never does."""
        plain = open_plain_png(data, self.decoder.max_pixels) if len(data) <= self.decoder.max_bytes else None
        if plain is not None:
            return plain
        source = self.decoder.decode(data, label)
        # Delivered as sent when nothing needs changing (a PNG; any format that carries Content Credentials).
        remember_source(source.image, data)
        return source.image

    async def decode_b64(self, value: str, label: str = "image") -> Image.Image:
        """Base64 or a ``data:`` URL."""
        try:
            data = parse_data_url(value, label)[1] if value[:5].lower() == "data:" else decode_base64(value, label)
        except InvalidImage as exc:
            raise ModelError(f"Provider '{self.provider}' returned an invalid image ({exc.message}).") from None
        return await self.decode(data, label)

    async def openai_image(self, item: dict[str, Any]) -> GeneratedImage:
        """One OpenAI-shaped ``data[]`` item (OpenAI, AIGNE Hub): inline ``b64_json``, or a ``url`` to download."""
        if item.get("b64_json"):
            return GeneratedImage(image=await self.decode_b64(item["b64_json"]))
        url = item.get("url")
        if not url:
            raise ModelError(f"Provider '{self.provider}' returned an image with neither b64_json nor url.")
        return GeneratedImage(image=await self.decode(await self.download(url)), source_url=url)

    def expect_count(self, images: list[GeneratedImage], n: int) -> list[GeneratedImage]:
        """``images``, if there are as many as were asked for: a provider that returns fewer or more has failed."""
        if len(images) != n:
            raise ModelError(f"Provider '{self.provider}' returned {len(images)} images instead of {n}.")
        return images

    async def fan_out(
        self, request: EngineRequest, one: Callable[[int], Awaitable[GeneratedImage]]
    ) -> list[GeneratedImage]:
        """``one(seed)`` for every seed, concurrently; the first failure cancels the rest."""
        if request.n == 1:
            return [await one(request.seeds[0])]
        tasks = [asyncio.ensure_future(one(seed)) for seed in request.seeds]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def trusts(self, url: str) -> bool:
        """Whether ``url`` may receive the credential: relative URLs and the provider's own origin."""
        if not url.startswith(("http://", "https://")):
            return True
        target, base = httpx.URL(url), self.client.base_url
        return (target.scheme, target.host, target.port) == (base.scheme, base.host, base.port)

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
        if isinstance(error, _Transient) and error.retry_after is not None:
            return max(error.retry_after, delay)
        return delay

    def _should_retry(self, error: BaseException) -> bool:
        if not isinstance(error, _Transient) or self.breaker.is_open:
            return False
        return error.retry_after is None or error.retry_after <= self.max_retry_after

    async def _attempt(self, method: str, url: str, headers: dict[str, str], kwargs: dict[str, Any]) -> httpx.Response:
        blocked = self.breaker.blocked_for()
        if blocked:
            raise ModelNotAvailable(
                f"Provider '{self.provider}' is failing; retry in {math.ceil(blocked)} s.", retry_after=blocked
            )
        _stats.get().requests += 1
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
                    raise _Transient(ModelError(f"Could not connect to provider '{self.provider}' in time.")) from None
                raise Timeout(f"Provider '{self.provider}' did not answer within {self.entry.timeout:g} s.") from None
            except httpx.TransportError as exc:
                self.breaker.failure()
                log.info("provider %s: %s on %s %s", self.provider, type(exc).__name__, method, request.url.path)
                reason = f"Could not reach provider '{self.provider}' ({type(exc).__name__})."
                raise _Transient(ModelError(reason)) from None
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
                raise _Transient(RateLimited(message, retry_after=retry_after or 1.0), retry_after)
            raise _Transient(ModelError(f"Provider '{provider}' failed (HTTP {status}){suffix}"), retry_after)
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
