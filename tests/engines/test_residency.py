"""Residency: idle unloading, LRU eviction under a memory budget, in-flight protection, reload on next use."""

from __future__ import annotations

import asyncio
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers / huggingface_hub read it

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image

from limner.app import build_state
from limner.core.models import EngineRequest, GeneratedImage, ImageRequest, Mode, SizeSpec
from limner.engines.base import Engine
from limner.engines.catalog import Catalog, ModelEntry
from limner.engines.residency import MB, Residency
from limner.settings import Settings
from tests.support.images import pixels
from tests.support.tiny_diffusers import build_tiny_sd
from tests.support.waiting import until


class FakeEngine(Engine):
    """Holds ``size`` bytes of 'weights' once loaded (on first generate); counts loads and unloads."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.loads = 0
        self.closes = 0
        self._loaded = False
        self.release = asyncio.Event()
        self.release.set()
        self.entered = asyncio.Event()

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def resident_bytes(self) -> int:
        return self.size if self._loaded else 0

    async def generate(self, request: EngineRequest) -> list[GeneratedImage]:
        if not self._loaded:
            self.loads += 1
            self._loaded = True
        self.entered.set()
        await self.release.wait()
        return [GeneratedImage(Image.new("RGB", (8, 8)), seed) for seed in request.seeds]

    async def aclose(self) -> None:
        self.closes += 1
        self._loaded = False


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def setup(*sizes_mb: int, idle: float = 0.0, budget_mb: int = 0) -> tuple[Catalog, Residency, Clock]:
    """Models m0, m1, ... of the given sizes (0: an engine without weights, like an upstream one)."""
    entries = [ModelEntry(id=f"m{i}", engine="fake", options={"mb": mb}) for i, mb in enumerate(sizes_mb)]
    catalog = Catalog(entries, {"fake": lambda entry: FakeEngine(int(entry.options.extra("mb") * MB))})
    clock = Clock()
    return catalog, Residency(catalog, idle_seconds=idle, budget_bytes=budget_mb * MB, clock=clock), clock


def fake(catalog: Catalog, model_id: str) -> FakeEngine:
    engine = catalog.engine(catalog.resolve(model_id))
    assert isinstance(engine, FakeEngine)
    return engine


async def use(catalog: Catalog, residency: Residency, model_id: str) -> None:
    """What ``ImageService`` does around its engine call."""
    entry = catalog.resolve(model_id)
    engine = catalog.engine(entry)
    async with residency.using(entry):
        await engine.generate(EngineRequest(mode=Mode.GENERATE, prompt="x", width=8, height=8, seeds=[1]))


async def test_idle_models_unload_and_load_again_on_next_use() -> None:
    catalog, residency, clock = setup(100, 0, idle=60)
    await use(catalog, residency, "m0")
    await use(catalog, residency, "m1")
    clock.now += 59
    assert await residency.sweep() == []
    clock.now += 2
    assert await residency.sweep() == ["m0"]  # m1 holds no weights: never closed
    assert (fake(catalog, "m0").closes, fake(catalog, "m1").closes) == (1, 0)
    assert not fake(catalog, "m0").loaded
    await use(catalog, residency, "m0")
    assert fake(catalog, "m0").loads == 2
    assert [(m.id, m.loaded, m.resident_bytes) for m in residency.status()] == [("m0", True, 100 * MB), ("m1", True, 0)]


async def test_zero_idle_time_never_unloads() -> None:
    catalog, residency, clock = setup(100)
    await use(catalog, residency, "m0")
    clock.now += 10**9
    assert await residency.sweep() == []
    assert fake(catalog, "m0").loaded


async def test_the_least_recently_used_idle_model_makes_room_under_the_budget() -> None:
    catalog, residency, clock = setup(100, 100, 100, budget_mb=250)
    for model_id in ("m0", "m1", "m0"):
        await use(catalog, residency, model_id)
        clock.now += 1
    await use(catalog, residency, "m2")  # size unknown before its first load: room is made once it shows
    assert [fake(catalog, m).loaded for m in ("m0", "m1", "m2")] == [True, False, True]
    clock.now += 1
    await use(catalog, residency, "m1")  # its size is known now: m0 goes before m1 loads
    assert [fake(catalog, m).loaded for m in ("m0", "m1", "m2")] == [False, True, True]
    assert residency.unloads == 2


async def test_a_model_with_a_request_in_flight_is_never_unloaded() -> None:
    catalog, residency, clock = setup(100, 100, idle=60, budget_mb=150)
    busy = fake(catalog, "m0")
    await use(catalog, residency, "m0")
    busy.release.clear()
    busy.entered.clear()
    running = asyncio.create_task(use(catalog, residency, "m0"))
    await busy.entered.wait()
    assert residency.in_flight("m0") == 1
    await use(catalog, residency, "m1")  # over budget, but m0 is busy: both stay
    assert busy.loaded and fake(catalog, "m1").loaded
    clock.now += 3600
    assert await residency.sweep() == ["m1"]
    assert busy.closes == 0
    busy.release.set()
    await running
    clock.now += 61
    assert await residency.sweep() == ["m0"]


async def test_fallbacks_count_as_in_use_while_their_primary_runs() -> None:
    entries = [
        ModelEntry(id="primary", engine="fake", options={"mb": 0}, fallbacks=["local"]),
        ModelEntry(id="local", engine="fake", options={"mb": 100}),
    ]
    catalog = Catalog(entries, {"fake": lambda entry: FakeEngine(int(entry.options.extra("mb") * MB))})
    clock = Clock()
    residency = Residency(catalog, idle_seconds=1, clock=clock)
    local = fake(catalog, "local")
    await use(catalog, residency, "local")
    async with residency.using(catalog.resolve("primary")):
        clock.now += 2
        assert await residency.sweep() == []
    assert local.closes == 0


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model on a busy machine
    yield build_tiny_sd(tmp_path_factory.mktemp("tiny-sd"))
    torch.set_num_threads(threads)


async def test_a_diffusers_model_unloads_when_idle_and_serves_the_next_request(tmp_path: Path, sd_dir: Path) -> None:
    entry = ModelEntry(
        id="sd", engine="diffusers", path=sd_dir, default_steps=2, default_size=(64, 64), cache_results=False
    )
    settings = Settings(data_dir=tmp_path, models=[entry], default_model="sd", model_idle_unload_seconds=0.05)
    state = build_state(settings)
    request = ImageRequest(prompt="a red square", model="sd", size=SizeSpec(64, 64), seed=3)
    engine = state.catalog.engine(entry)
    try:
        first = await state.service.run(request, "r1")
        assert engine.loaded and engine.resident_bytes > 0
        residency = state.service.residency
        await until(lambda: (residency.status()[0].idle_seconds or 0) >= 0.05, what="the model's idle time")
        assert await residency.sweep() == ["sd"]
        assert not engine.loaded and engine.resident_bytes == 0
        second = await state.service.run(request, "r2")
        assert engine.loaded
        assert pixels(second.images[0].data) == pixels(first.images[0].data)
    finally:
        await state.catalog.aclose()
