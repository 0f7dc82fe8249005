"""Test doubles for dialect tests: engines that record or fail, a store that cannot write, and a
middleware that names the calling consumer (until accounts exist, every caller is ``local``)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from limner.core.errors import LimnerError
from limner.core.models import EngineRequest, GeneratedImage
from limner.engines.base import Engine
from limner.engines.catalog import EngineFactory, ModelEntry
from limner.engines.registry import default_factories
from limner.engines.testpattern import TestPatternEngine
from limner.media.store import LocalMediaStore

CONSUMER_HEADER = b"x-test-consumer"


class RecordingEngine(TestPatternEngine):
    """The test-pattern engine, keeping every ``EngineRequest`` it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[EngineRequest] = []

    async def generate(self, request: EngineRequest) -> list[GeneratedImage]:
        self.requests.append(request)
        return await super().generate(request)


class RaisingEngine(Engine):
    """Fails every request with ``error`` (a foreign exception or a limner one)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def generate(self, request: EngineRequest) -> list[GeneratedImage]:
        raise self.error


class FailingStore(LocalMediaStore):
    """A store whose disk is full: images are generated but cannot be stored."""

    async def put(self, data: bytes, *, mime_type: str, owner: str) -> str:
        raise LimnerError("the media store could not write the image")


def factories(**extra: Callable[[ModelEntry], Engine]) -> dict[str, EngineFactory]:
    return {**default_factories(), **extra}


class ConsumerHeader:
    """Sets ``request.state.consumer`` from ``X-Test-Consumer``, standing in for bearer-token auth."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            consumer = dict(scope.get("headers") or []).get(CONSUMER_HEADER)
            if consumer:
                scope.setdefault("state", {})["consumer"] = consumer.decode()
        await self.app(scope, receive, send)


def raising(error: Exception) -> Callable[[ModelEntry], Engine]:
    return lambda entry: RaisingEngine(error)


def fail_storage(app: object) -> None:
    """Swap the app's store for one that cannot write (the service holds it too)."""
    state = app.state.limner  # type: ignore[attr-defined]
    store = FailingStore(state.store.root)
    state.store = store
    state.service.store = store
