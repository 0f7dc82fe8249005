"""Which local models stay in memory: loaded lazily, kept while used, unloaded when idle or crowded out.

Idle models that never leave memory are a standing complaint about local image servers, so limner
tracks, per catalog model, when it was last used and how many requests are inside it, and:

- ``sweep()`` (run every few seconds by the app) unloads models idle for ``idle_seconds``;
- ``using(entry)``, wrapped around every engine call by ``ImageService``, first makes room under
  ``budget_bytes`` for a model that is not loaded, unloading the least recently used idle models.

Only engines reporting ``resident_bytes > 0`` are ever unloaded (local weights; upstream engines report
0, so their connections are never closed here), and never one with a request in flight. Unloading is
``engine.aclose()``: local engines load again on their next request. A model's fallbacks count as in
use while it runs, because ``FallbackEngine`` may call them at any moment of the request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from limner.engines.base import Engine
from limner.engines.catalog import Catalog, ModelEntry

log = logging.getLogger(__name__)

MB = 2**20


@dataclass(frozen=True)
class ModelResidency:
    """One model as ``GET /limner/models`` reports it."""

    id: str
    engine: str
    loaded: bool
    resident_bytes: int
    loading: bool
    """Its weights are loading (with ``compile = true``, compiling too): requests for it wait."""
    in_flight: int
    idle_seconds: float | None
    """Seconds since its last request ended; None when it has not served one."""
    precision: str | None = None
    """A local model's dtype as its entry asks for it ("auto": float32 on the CPU, half on CUDA); None upstream."""
    quantization: str | None = None
    """A local model's quantised weights (``limner.engines.quantization``); None upstream."""


class Residency:
    """Last use and requests in flight per model, and the unloading that follows from them."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        idle_seconds: float = 0.0,
        budget_bytes: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.catalog = catalog
        self.idle_seconds = idle_seconds
        """Unload a model unused for this long; 0 keeps models loaded."""
        self.budget_bytes = budget_bytes
        """Make room for a model that is loading when the loaded ones would exceed this; 0 is unlimited."""
        self._clock = clock
        self._last_used: dict[str, float] = {}
        self._in_flight: dict[str, int] = {}
        self._sizes: dict[str, int] = {}
        """Each model's bytes when last seen loaded: what loading it again will take."""
        self._lock = asyncio.Lock()
        """One unloading pass at a time, so two passes never pick the same victim."""
        self.unloads = 0

    @asynccontextmanager
    async def using(self, entry: ModelEntry) -> AsyncIterator[None]:
        """Around one engine call for ``entry``: counted in flight (never unloaded) until it returns."""
        ids = (entry.id, *entry.fallbacks)
        now = self._clock()
        for model_id in ids:
            self._in_flight[model_id] = self._in_flight.get(model_id, 0) + 1
            self._last_used[model_id] = now
        try:
            if self.budget_bytes:
                engine = self.catalog.built().get(entry.id)
                if engine is not None and not engine.loaded:
                    await self.make_room(self._sizes.get(entry.id, 0))
            yield
        finally:
            now = self._clock()
            for model_id in ids:
                self._in_flight[model_id] -= 1
                self._last_used[model_id] = now
        if self.budget_bytes:
            # A model loaded for the first time only now shows its size: others may have to go.
            await self.make_room(0, keep=entry.id)

    def in_flight(self, model_id: str) -> int:
        return self._in_flight.get(model_id, 0)

    async def make_room(self, needed: int, *, keep: str | None = None) -> list[str]:
        """Unload least recently used idle models until the loaded ones plus ``needed`` bytes fit the
        budget, or none is left to unload (models in flight stay: a request beats the budget)."""
        unloaded: list[str] = []
        if not self.budget_bytes:
            return unloaded
        async with self._lock:
            while True:
                resident = self._resident()
                if sum(size for _, size in resident.values()) + needed <= self.budget_bytes:
                    break
                idle = [model_id for model_id in resident if model_id != keep and not self.in_flight(model_id)]
                if not idle:
                    log.warning("memory budget of %d MB exceeded: no idle model to unload", self.budget_bytes // MB)
                    break
                victim = min(idle, key=lambda model_id: self._last_used.get(model_id, float("-inf")))
                await self._unload(victim, *resident[victim], reason="to fit the memory budget")
                unloaded.append(victim)
        return unloaded

    async def sweep(self) -> list[str]:
        """Unload every loaded model idle for ``idle_seconds`` or longer; returns their ids."""
        unloaded: list[str] = []
        if self.idle_seconds <= 0:
            return unloaded
        async with self._lock:
            now = self._clock()
            for model_id, (engine, size) in self._resident().items():
                if self.in_flight(model_id):
                    continue
                last = self._last_used.setdefault(model_id, now)  # loaded without a request (preload): from now
                if now - last >= self.idle_seconds:
                    await self._unload(model_id, engine, size, reason=f"after {now - last:.0f} s idle")
                    unloaded.append(model_id)
        return unloaded

    async def sweep_forever(self) -> None:
        """The app's background unloader: checks a few times per idle period, at least every 30 s."""
        if self.idle_seconds <= 0:
            return
        interval = min(30.0, max(0.5, self.idle_seconds / 4))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except Exception:
                log.exception("unloading idle models failed")

    def status(self) -> list[ModelResidency]:
        """Every catalog model's residency, in catalog order."""
        now = self._clock()
        built = self.catalog.built()
        report = []
        for entry in self.catalog.entries:
            engine = built.get(entry.id)
            last = self._last_used.get(entry.id)
            report.append(
                ModelResidency(
                    id=entry.id,
                    engine=entry.engine,
                    loaded=engine is not None and engine.loaded,
                    loading=engine is not None and engine.loading,
                    resident_bytes=engine.resident_bytes if engine is not None else 0,
                    in_flight=self.in_flight(entry.id),
                    idle_seconds=None if last is None or self.in_flight(entry.id) else now - last,
                    **entry.precision_fields(),
                )
            )
        return report

    def _resident(self) -> dict[str, tuple[Engine, int]]:
        """The engines holding weights now, with their sizes (remembered for their next load)."""
        resident = {}
        for model_id, engine in self.catalog.built().items():
            size = engine.resident_bytes
            if size > 0:
                self._sizes[model_id] = size
                resident[model_id] = (engine, size)
        return resident

    async def _unload(self, model_id: str, engine: Engine, size: int, *, reason: str) -> None:
        log.info("unloading model '%s' (%.1f MB) %s", model_id, size / MB, reason)
        self.unloads += 1
        await engine.aclose()
