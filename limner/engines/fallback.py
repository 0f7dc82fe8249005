"""``FallbackEngine``: a catalog model that tries other catalog models when its own provider fails.

Composed by ``Catalog.engine`` for entries with ``fallbacks``, so neither the service nor the
providers know fallbacks exist. Only provider-side failures move on to the next model
(``ModelError`` and its kinds, ``Timeout``, ``RateLimited``, unexpected exceptions): a request that
the primary model rejects as invalid would be rejected by the next one too, and is raised at once.
A fallback that cannot serve the request at all (mode, count, mask, input images) is skipped. When
every model fails, the primary's error is raised, because it is about the model the client asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from limner.core.errors import LimnerError, ModelError, RateLimited, Timeout
from limner.core.models import Capabilities, EngineRequest, GeneratedImage, Mode
from limner.engines.base import Engine

log = logging.getLogger(__name__)

FALLBACK_ERRORS: tuple[type[LimnerError], ...] = (ModelError, Timeout, RateLimited)
"""Errors that say the provider failed, not the request."""


def falls_back(error: Exception) -> bool:
    """True when the next model may succeed where this one failed."""
    return isinstance(error, FALLBACK_ERRORS) or not isinstance(error, LimnerError)


def cannot_serve(caps: Capabilities, request: EngineRequest) -> str | None:
    """Why an engine with ``caps`` cannot take ``request`` as planned for the primary, or None."""
    if request.mode is not Mode.GENERATE and request.mode not in caps.modes:
        return f"does not support {request.mode.value}"
    if request.n > caps.max_images:
        return f"makes at most {caps.max_images} images per request"
    if len(request.images) > max(caps.max_input_images, 0) and request.mode is not Mode.GENERATE:
        return f"takes at most {caps.max_input_images} input images"
    if request.mask is not None and not caps.supports_mask:
        return "does not support masks"
    return None


class FallbackEngine(Engine):
    """``primary``, then each fallback in order, for provider-side failures."""

    def __init__(self, model_id: str, primary: Engine, fallbacks: list[tuple[str, Callable[[], Engine]]]) -> None:
        self.model_id = model_id
        self.primary = primary
        self.fallbacks = fallbacks
        self.capabilities = primary.capabilities
        """Requests are planned for the primary; fallbacks are checked against it with ``cannot_serve``."""

    @property
    def loaded(self) -> bool:
        return self.primary.loaded

    @property
    def loading(self) -> bool:
        return self.primary.loading

    @property
    def resident_bytes(self) -> int:
        """The primary's weights; fallbacks are counted under their own catalog entries."""
        return self.primary.resident_bytes

    async def load(self) -> None:
        await self.primary.load()

    def engines(self) -> list[Engine]:
        """The primary and every fallback engine (built now if not yet), for observers and tests."""
        return [self.primary, *(build() for _, build in self.fallbacks)]

    async def generate(self, request: EngineRequest) -> list[GeneratedImage]:
        try:
            return await self.primary.generate(request)
        except Exception as exc:
            if not falls_back(exc):
                raise
            first = exc
            log.warning("model '%s' failed (%s); trying its fallbacks", self.model_id, _describe(exc))
        for model_id, build in self.fallbacks:
            engine = build()
            reason = cannot_serve(engine.capabilities, request)
            if reason is not None:
                log.info("fallback '%s' for '%s' skipped: it %s", model_id, self.model_id, reason)
                continue
            try:
                images = await engine.generate(request)
            except Exception as exc:
                log.warning("fallback '%s' for '%s' failed (%s)", model_id, self.model_id, _describe(exc))
                continue
            log.info("model '%s' answered by its fallback '%s'", self.model_id, model_id)
            return images
        raise first

    async def aclose(self) -> None:
        """Nothing of its own: the catalog closes the engines it built, shared ones once."""


def _describe(error: Exception) -> str:
    return error.code if isinstance(error, LimnerError) else type(error).__name__
