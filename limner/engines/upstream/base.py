"""``UpstreamEngine``: what every hosted-provider engine shares, so that a provider module is only
its wire format.

A provider subclass sets ``provider`` and ``default_url``, builds its ``capabilities`` for its model
in ``__init__``, and implements ``_generate`` with the helpers of the engine's two parts: calling the
provider (``calls.ProviderCalls``: ``send``, one logical HTTP request: credentials added, retried with
backoff on 429/5xx/connection errors honouring ``Retry-After``, guarded by a circuit breaker, errors
translated; ``json``) and reading its answer (``results.ResultImages``: ``download``, result URLs through
the SSRF-safe ``ImageFetcher``; ``decode`` / ``decode_b64`` within ``ImageDecoder`` limits; ``fan_out``,
one upstream call per seed, for providers that make one image per call). It may override
``auth_headers``, ``error_message``, ``is_unknown_model``, ``is_auth_error`` and ``trusts``. This module
builds the parts (client, breaker, fetcher, decoder) and records every ``generate`` as an ``UpstreamCall``.

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
import time
from collections import deque
from typing import Any, ClassVar, Self

import httpx

from limner import __version__
from limner.core.errors import LimnerError, ModelAuthError, ModelError
from limner.core.models import Capabilities, EngineRequest, GeneratedImage
from limner.engines.base import Engine
from limner.engines.catalog import ModelEntry
from limner.engines.upstream.calls import ProviderCalls
from limner.engines.upstream.credentials import Credential, load_credential
from limner.engines.upstream.resilience import CircuitBreaker
from limner.engines.upstream.results import ResultImages
from limner.engines.upstream.transport import provider_transport
from limner.engines.upstream.usage import CallObserver, CallStats, Outcome, UpstreamCall, current_stats
from limner.media.inputs import ImageDecoder, ImageFetcher

log = logging.getLogger(__name__)

MAX_REMEMBERED = 64
"""Endpoint URLs and header sets each engine keeps built (a provider has a handful of each)."""


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


class UpstreamEngine(ProviderCalls, ResultImages, Engine):
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

    # --- what a provider implements (it may override the hooks of ``ProviderCalls`` too) ----------

    async def _generate(self, request: EngineRequest) -> list[GeneratedImage]:
        raise NotImplementedError

    # --- the engine interface ---------------------------------------------------------------------

    def subscribe(self, observer: CallObserver) -> None:
        """Call ``observer`` with an ``UpstreamCall`` after every ``generate`` (usage and cost); once,
        however often it subscribes (an engine can be reached directly and as another's fallback)."""
        if observer not in self._observers:
            self._observers.append(observer)

    async def generate(self, request: EngineRequest) -> list[GeneratedImage]:
        stats = CallStats()
        token = current_stats.set(stats)
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
            current_stats.reset(token)
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
