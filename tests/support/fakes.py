"""Test doubles for dialect tests: engines that record or fail, a store that cannot write, and an
authentication that takes the consumer's name from a header."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from fastapi import FastAPI, Request

from limner.accounts.tokens import Principal
from limner.core.errors import LimnerError
from limner.core.models import EngineRequest, GeneratedImage, Mode
from limner.engines.base import Engine
from limner.engines.catalog import EngineFactory, ModelEntry
from limner.engines.registry import default_factories
from limner.engines.testpattern import TestPatternEngine
from limner.http.auth import authenticate, principal_var
from limner.media.store import LocalMediaStore

CONSUMER_HEADER = "x-test-consumer"


class RecordingEngine(TestPatternEngine):
    """The test-pattern engine, keeping every ``EngineRequest`` it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[EngineRequest] = []

    async def generate(self, request: EngineRequest) -> list[GeneratedImage]:
        self.requests.append(request)
        return await super().generate(request)


class SingleInputEngine(RecordingEngine):
    """Edits take one source image: several must be laid out by limner (``compose="layout"``) or refused."""

    capabilities = replace(
        TestPatternEngine.capabilities, modes=frozenset({Mode.GENERATE, Mode.EDIT}), max_input_images=1
    )


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


def consumer_from_header(app: FastAPI) -> None:
    """Authenticate callers as the consumer named in ``X-Test-Consumer`` (default ``local``), standing
    in for bearer tokens where a test is about ownership rather than about tokens."""

    async def authenticate_by_header(request: Request) -> Principal:
        principal = Principal(consumer=request.headers.get(CONSUMER_HEADER, "local"))
        request.state.principal = principal
        principal_var.set(principal)
        return principal

    app.dependency_overrides[authenticate] = authenticate_by_header


def raising(error: Exception) -> Callable[[ModelEntry], Engine]:
    return lambda entry: RaisingEngine(error)


def fail_storage(app: object) -> None:
    """Swap the app's store for one that cannot write (the service holds it too)."""
    state = app.state.limner  # type: ignore[attr-defined]
    store = FailingStore(state.store.root)
    state.store = store
    state.service.media.store = store
