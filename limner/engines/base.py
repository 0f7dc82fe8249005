"""The whole engine contract, in the spirit of httpx's transport base.

An engine turns an ``EngineRequest`` (sizes resolved, seeds drawn, style applied) into images.
To implement one: subclass ``Engine``, describe what it can do in ``capabilities``, implement
``generate`` (never block the event loop: run CPU/GPU work in a thread), and release resources in
``aclose``. Translate foreign errors into ``limner.core.errors`` where they happen. Reporting how long
denoising and decoding took (``GeneratedImage.timings``) is optional.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType

from limner.core.models import Capabilities, EngineRequest, GeneratedImage


class Engine(ABC):
    """An image engine: a local pipeline, the built-in model, or an upstream provider."""

    capabilities: Capabilities = Capabilities()

    @abstractmethod
    async def generate(self, request: EngineRequest) -> list[GeneratedImage]:
        """Return ``request.n`` images, one per seed, in seed order.

        An engine that can tell where its denoising loop ended fills each image's ``timings``
        (``EngineTimings``: denoise and decode seconds) for the service's per-stage metrics; one that
        cannot leaves it None, and those stages are simply not reported for its model."""

    async def load(self) -> None:  # noqa: B027 - optional hook
        """Load weights or open connections ahead of the first request (optional)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release memory, threads and connections."""

    @property
    def loaded(self) -> bool:
        return True

    @property
    def loading(self) -> bool:
        """Whether weights are loading now (and, with ``compile``, compiling): requests wait for it to finish."""
        return False

    @property
    def resident_bytes(self) -> int:
        """Bytes of model weights this engine holds now; 0 for engines without local weights.

        ``limner.engines.residency`` only ever unloads engines reporting more than 0, so upstream
        engines (whose ``aclose`` closes connections, not memory) are never touched by it."""
        return 0

    async def __aenter__(self) -> Engine:
        await self.load()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.aclose()
