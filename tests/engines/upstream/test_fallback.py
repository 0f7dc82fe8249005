"""Fallbacks: a catalog model that tries other catalog models, in order, when its provider fails."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from limner.core.errors import InvalidRequest, ModelAuthError, ModelError, Timeout
from limner.engines.catalog import Catalog, EngineFactory, ModelEntry
from limner.engines.fallback import FallbackEngine
from limner.engines.registry import default_factories
from limner.engines.upstream import UpstreamCall, observe_calls
from tests.engines.upstream.conftest import Fake, request
from tests.support.fakes import RaisingEngine, raising


@pytest.fixture
async def catalogs() -> AsyncIterator[list[Catalog]]:
    made: list[Catalog] = []
    yield made
    for catalog in made:
        await catalog.aclose()


def catalog_of(made: list[Catalog], *entries: ModelEntry, **extra: EngineFactory) -> Catalog:
    catalog = Catalog(list(entries), {**default_factories(), **extra})
    made.append(catalog)
    return catalog


async def test_a_failing_provider_falls_back_to_the_next(fakes: dict[str, Fake], catalogs: list[Catalog]) -> None:
    fakes["openai"].control.set("fail")
    fakes["gemini"].control.set("reject")
    catalog = catalog_of(
        catalogs,
        fakes["openai"].entry(id="primary", fallbacks=["backup-1", "backup-2"]),
        fakes["gemini"].entry(id="backup-1"),
        fakes["milady"].entry(id="backup-2", aliases=["milady-alias"]),
    )
    engine = catalog.engine(catalog.resolve("primary"))
    assert isinstance(engine, FallbackEngine)
    calls: list[UpstreamCall] = []
    assert observe_calls(engine, calls.append)
    images = await engine.generate(request(n=2))
    assert [image.text for image in images] == ["caption 0", "caption 1"]
    assert [len(fakes[name].control.posts()) for name in ("openai", "gemini", "milady")] == [3, 2, 1]
    assert [(call.model, call.outcome) for call in calls] == [
        ("primary", "error"),
        ("backup-1", "error"),
        ("backup-2", "ok"),
    ]
    assert catalog.engine(catalog.resolve("backup-2")) is engine.engines()[2]  # shared, breaker and all


async def test_when_all_fail_the_primary_error_is_raised(catalogs: list[Catalog]) -> None:
    catalog = catalog_of(
        catalogs,
        ModelEntry(id="a", engine="auth", fallbacks=["b"]),
        ModelEntry(id="b", engine="slow"),
        auth=raising(ModelAuthError("bad key for a")),
        slow=raising(Timeout("b took too long")),
    )
    with pytest.raises(ModelAuthError, match="bad key for a"):
        await catalog.engine(catalog.resolve("a")).generate(request())


async def test_invalid_requests_do_not_fall_back(catalogs: list[Catalog]) -> None:
    backup = RaisingEngine(ModelError("never called"))
    catalog = catalog_of(
        catalogs,
        ModelEntry(id="a", engine="picky", fallbacks=["b"]),
        ModelEntry(id="b", engine="backup"),
        picky=raising(InvalidRequest("prompt too long")),
        backup=lambda entry: backup,
    )
    with pytest.raises(InvalidRequest):
        await catalog.engine(catalog.resolve("a")).generate(request())


async def test_a_fallback_that_cannot_serve_is_skipped(fakes: dict[str, Fake], catalogs: list[Catalog]) -> None:
    fakes["aigne"].control.set("fail")
    catalog = catalog_of(
        catalogs,
        fakes["aigne"].entry(id="hub", fallbacks=["milady", "gemini"]),
        fakes["milady"].entry(id="milady"),
        fakes["gemini"].entry(id="gemini"),
    )
    images = await catalog.engine(catalog.resolve("hub")).generate(request(n=6))
    assert len(images) == 6
    assert fakes["milady"].control.requests == []  # at most 4 images: skipped
    assert len(fakes["gemini"].control.posts()) == 6


def test_fallbacks_must_name_other_catalog_models() -> None:
    with pytest.raises(ValueError, match="falls back to unknown model 'nope'"):
        Catalog([ModelEntry(id="a", engine="openai", fallbacks=["nope"])], default_factories())
    with pytest.raises(ValueError, match="lists itself"):
        Catalog([ModelEntry(id="a", engine="openai", aliases=["x"], fallbacks=["x"])], default_factories())


async def test_fallback_cycles_are_not_followed(catalogs: list[Catalog]) -> None:
    catalog = catalog_of(
        catalogs,
        ModelEntry(id="a", engine="broken", fallbacks=["b"]),
        ModelEntry(id="b", engine="broken", fallbacks=["a"]),
        broken=raising(ModelError("down")),
    )
    with pytest.raises(ModelError, match="down"):
        await catalog.engine(catalog.resolve("a")).generate(request())


def test_upstream_entries_default_to_many_slots() -> None:
    assert ModelEntry(id="a", engine="openai").max_concurrency == 32
    assert ModelEntry(id="a", engine="openai", max_concurrency=2).max_concurrency == 2
    assert ModelEntry(id="a", engine="diffusers").max_concurrency == 1
