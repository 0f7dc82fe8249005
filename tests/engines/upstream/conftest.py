"""Fake providers on 127.0.0.1 (one live server each for the session), engines pointed at them,
and ``EngineRequest`` shorthand. Every test starts with fresh ``Control``s and the key in the env."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest
from PIL import Image
from starlette.applications import Starlette

from limner.core.models import EngineRequest, Mode
from limner.engines.catalog import ModelEntry
from limner.engines.registry import default_factories
from limner.engines.upstream.base import UpstreamEngine
from tests.engines.upstream.fakes import aigne, aiml, bfl, gemini, imagineart, milady, openai
from tests.engines.upstream.fakes.common import KEY, KEY_ENV, Control
from tests.support.live_server import live_server

PROVIDERS: dict[str, tuple[Callable[[], Starlette], str, str]] = {
    "openai": (openai.build, "/v1", "dall-e-2"),
    "gemini": (gemini.build, "/v1beta", "gemini-2.5-flash-image"),
    "bfl": (bfl.build, "", "flux-kontext-max"),
    "aiml": (aiml.build, "", "image-gen.pro-1.0"),
    "milady": (milady.build, "", "google/gemini-2.5-flash-image"),
    "aigne": (aigne.build, "", "dall-e-2"),
    "imagineart": (imagineart.build, "", "text-to-image"),
}
"""engine name -> (fake app, API base path, a model the fake knows)."""
FAST = {"backoff": 0.01, "max_backoff": 0.05, "breaker_threshold": 1000, "poll_interval": 0.01}


@dataclass
class Fake:
    name: str
    root: str
    app: Starlette

    @property
    def control(self) -> Control:
        control: Control = self.app.state.control
        return control

    @property
    def url(self) -> str:
        return self.root + PROVIDERS[self.name][1]

    def entry(self, **overrides: Any) -> ModelEntry:
        fields: dict[str, Any] = {
            "id": f"{self.name}-model",
            "engine": self.name,
            "provider_url": self.url,
            "upstream_model": PROVIDERS[self.name][2],
            "api_key_env": KEY_ENV,
            "allow_private_urls": True,
            "timeout": 5.0,
            "max_retries": 2,
        }
        options = {**FAST, **overrides.pop("options", {})}
        return ModelEntry(**{**fields, **overrides, "options": options})


@pytest.fixture(scope="session")
def fake_servers() -> Iterator[dict[str, Fake]]:
    with ExitStack() as stack:
        fakes = {}
        for name, (build, _, _) in PROVIDERS.items():
            app = build()
            fakes[name] = Fake(name, stack.enter_context(live_server(app)), app)
        yield fakes


@pytest.fixture
def fakes(fake_servers: dict[str, Fake], monkeypatch: pytest.MonkeyPatch) -> dict[str, Fake]:
    monkeypatch.setenv(KEY_ENV, KEY)
    for fake in fake_servers.values():
        fake.app.state.control = Control()
    return fake_servers


@pytest.fixture
async def make_engine() -> AsyncIterator[Callable[[ModelEntry], UpstreamEngine]]:
    """Builds engines through the registry (as the catalog does) and closes them after the test."""
    built: list[UpstreamEngine] = []
    factories = default_factories()

    def make(entry: ModelEntry) -> UpstreamEngine:
        engine = factories[entry.engine](entry)
        assert isinstance(engine, UpstreamEngine)
        built.append(engine)
        return engine

    yield make
    for engine in built:
        await engine.aclose()


def request(
    n: int = 1,
    size: tuple[int, int] = (1024, 1024),
    mode: Mode = Mode.GENERATE,
    images: int = 0,
    prompt: str = "a red fox in the snow",
    **fields: Any,
) -> EngineRequest:
    sources = [Image.new("RGB", (48, 32), (10 * index, 100, 200)) for index in range(images)]
    return EngineRequest(
        mode=mode,
        prompt=prompt,
        width=size[0],
        height=size[1],
        seeds=[7 + i for i in range(n)],
        images=sources,
        **fields,
    )
