"""The result cache stage: a repeated seeded request returns the first one's bytes without running the engine;
any change to what decides the pixels is a miss; consumers never share entries; the cache price is charged."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from typing import Any

from PIL import Image

from limner.accounts import consumers, credits
from limner.app import build_state
from limner.core.models import ImageRequest, LoraChoice, SizeSpec, SourceImage
from limner.engines import testpattern
from limner.engines.catalog import Catalog, LoraEntry, ModelEntry
from limner.engines.registry import default_factories
from limner.http.deps import AppState
from limner.service.stages.cache import ResultCache
from limner.service.stages.plan import plan_request
from limner.settings import Settings

PATTERN = ModelEntry(id="pattern", engine="testpattern", price_per_image=2.0)


def state_with(tmp_path: Path, *entries: ModelEntry, **settings: Any) -> AppState:
    models = list(entries) or [PATTERN]
    return build_state(Settings(data_dir=tmp_path, models=models, default_model=models[0].id, **settings))


def seeded(**fields: Any) -> ImageRequest:
    return ImageRequest(**{"prompt": "a red kite", "model": "pattern", "seed": 7, "size": SizeSpec(64, 64), **fields})


def engine_calls(state: AppState, model: str = "pattern") -> int:
    engine = state.catalog.engine(state.catalog.resolve(model))
    assert isinstance(engine, testpattern.TestPatternEngine)
    return engine.calls


def metric(state: AppState, model: str, outcome: str) -> float:
    value = state.metrics.registry.get_sample_value(
        "limner_result_cache_lookups_total", {"model": model, "outcome": outcome}
    )
    return value or 0.0


async def test_a_repeated_seeded_request_returns_the_same_bytes_without_the_engine(tmp_path: Path) -> None:
    state = state_with(tmp_path)
    first = await state.service.run(seeded(n=2), "r1")
    second = await state.service.run(seeded(n=2), "r2")
    assert engine_calls(state) == 1
    assert [image.data for image in second.images] == [image.data for image in first.images]
    assert [image.seed for image in second.images] == [7, 8]
    assert second.images[0].key == first.images[0].key, "the store keeps one copy of the same bytes"
    assert Image.open(io.BytesIO(second.images[0].data)).size == (64, 64)
    assert (metric(state, "pattern", "miss"), metric(state, "pattern", "hit")) == (1, 1)
    assert b"limner_result_cache_lookups_total" in state.metrics.render()


async def test_unseeded_requests_other_consumers_and_switched_off_models_are_not_served_from_it(
    tmp_path: Path,
) -> None:
    off = ModelEntry(id="off", engine="testpattern", cache_results=False)
    state = state_with(tmp_path, PATTERN, off)
    for request in (seeded(seed=None), seeded(seed=None)):
        await state.service.run(request, "unseeded")
    assert engine_calls(state) == 2 and metric(state, "pattern", "miss") == 0, "no lookup without a seed"
    await state.service.run(seeded(consumer="alice"), "a")
    await state.service.run(seeded(consumer="bob"), "b")
    assert engine_calls(state) == 4, "one consumer never gets another's images"
    await state.service.run(seeded(model="off"), "o1")
    await state.service.run(seeded(model="off"), "o2")
    assert engine_calls(state, "off") == 2


async def test_a_size_cap_of_zero_turns_it_off(tmp_path: Path) -> None:
    state = state_with(tmp_path, result_cache_bytes=0)
    await state.service.run(seeded(), "1")
    await state.service.run(seeded(), "2")
    assert engine_calls(state) == 2


async def test_hits_are_charged_the_usual_price_or_the_cache_price(tmp_path: Path) -> None:
    cheap = ModelEntry(id="cheap", engine="testpattern", price_per_image=2.0, cache_price_per_image=0.5)
    state = state_with(tmp_path, PATTERN, cheap)
    db = state.accounts.db
    consumers.create_consumer(db, "alice")
    credits.grant(db, "alice", credits.MICROS * 100)
    spent: list[float] = []
    for model in ("pattern", "pattern", "cheap", "cheap"):
        before = credits.balance(db, "alice")
        await state.service.run(seeded(model=model, consumer="alice"), f"{model}-{len(spent)}")
        after = credits.balance(db, "alice")
        assert before is not None and after is not None
        spent.append((before - after) / credits.MICROS)
    assert spent == [2.0, 2.0, 2.0, 0.5]


def test_the_cache_is_bounded_in_bytes_least_recently_used_first() -> None:
    from limner.core.models import GeneratedImage
    from limner.service.stages.finish import Encoded

    def one(size: int) -> list[Encoded]:
        return [Encoded(GeneratedImage(Image.new("L", (10, 10))), b"x" * size, "image/png")]

    cache = ResultCache(max_bytes=1000)
    cache.put("a", one(300))
    cache.put("b", one(300))
    assert cache.get("a", "m") is not None  # "a" is now the most recently used
    cache.put("c", one(300))
    assert cache.get("b", "m") is None and cache.get("a", "m") is not None and cache.get("c", "m") is not None
    cache.put("huge", one(2000))
    assert cache.get("huge", "m") is None and cache.bytes <= 1000


def _source(color: tuple[int, int, int]) -> SourceImage:
    return SourceImage(Image.new("RGB", (64, 64), color), "image")


BASE = dict(prompt="a red kite", model="lora-model", seed=7, size=SizeSpec(64, 64), steps=4, guidance=5.0)
CHANGES: dict[str, dict[str, Any]] = {
    "model": {"model": "other"},
    "prompt": {"prompt": "a blue kite"},
    "negative prompt": {"negative_prompt": "fog"},
    "seed": {"seed": 8},
    "n": {"n": 2},
    "size": {"size": SizeSpec(128, 64)},
    "steps": {"steps": 5},
    "guidance": {"guidance": 5.5},
    "scheduler": {"scheduler": "euler_a"},
    "adapter": {"loras": [LoraChoice("ink", 1.0)]},
    "adapter weight": {"loras": [LoraChoice("ink", 0.5)]},
    "style": {"style": "comic-book"},
    "strength": {"strength": 0.3},
    "output format": {"output_format": "webp"},
    "compression": {"output_format": "webp", "output_compression": 50},
    "background": {"background": "opaque"},
    "quality": {"quality": "hd"},
    "watermark": {"watermark": True},
    "consumer": {"consumer": "bob"},
}


def _key(catalog: Catalog, request: ImageRequest, images: list[Image.Image], mask: Image.Image | None) -> str:
    plan = plan_request(catalog, request)
    key = ResultCache(1).key(plan, plan.sizes(images[0] if images else None), images, mask)
    assert key is not None
    return key


def test_every_pixel_deciding_input_changes_the_key(tmp_path: Path) -> None:
    lora = LoraEntry(name="ink", path=tmp_path / "ink.safetensors")
    entries = [
        ModelEntry(id="lora-model", engine="testpattern", loras=[lora]),
        ModelEntry(id="other", engine="testpattern", loras=[lora]),
    ]
    catalog = Catalog(entries, default_factories())
    base = ImageRequest(**BASE)  # type: ignore[arg-type]
    key = _key(catalog, base, [], None)
    assert _key(catalog, ImageRequest(**BASE), [], None) == key, "the same request, the same key"  # type: ignore[arg-type]
    keys = {name: _key(catalog, replace(base, **change), [], None) for name, change in CHANGES.items()}
    assert all(changed != key for changed in keys.values()), [name for name, k in keys.items() if k == key]
    assert len(set(keys.values())) == len(keys)
    edit = replace(base, images=[_source((200, 0, 0))])
    red = _key(catalog, edit, [Image.new("RGB", (64, 64), (200, 0, 0))], None)
    green = _key(catalog, edit, [Image.new("RGB", (64, 64), (0, 200, 0))], None)
    masked = _key(catalog, edit, [Image.new("RGB", (64, 64), (200, 0, 0))], Image.new("L", (64, 64), 255))
    other_mask = _key(catalog, edit, [Image.new("RGB", (64, 64), (200, 0, 0))], Image.new("L", (64, 64), 0))
    assert len({key, red, green, masked, other_mask}) == 5, "input and mask bytes decide the key"
