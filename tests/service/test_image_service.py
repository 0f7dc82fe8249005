"""ImageService: mode planning, composition, seeds, queueing, errors, and all-or-nothing storage."""

from __future__ import annotations

import asyncio
import io
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from limner.core.errors import LimnerError, ModelError, ModelNotFound, QueueFull, Timeout, UnsupportedOperation
from limner.core.models import Capabilities, EngineRequest, GeneratedImage, ImageRequest, Mode, SizeSpec, SourceImage
from limner.engines.base import Engine
from limner.engines.catalog import Catalog, ModelEntry
from limner.engines.registry import default_factories
from limner.media.inputs import ImageDecoder, ImageFetcher, ImageLoader
from limner.media.signing import UrlSigner
from limner.media.store import LocalMediaStore, content_key
from limner.service.image_service import ImageService, ServiceOptions
from limner.service.media_access import MediaAccess
from tests.conftest import pattern_models
from tests.support.waiting import until


class RecordingEngine(Engine):
    """Takes one input image, no masks; records what it was asked."""

    capabilities = Capabilities(modes=frozenset({Mode.GENERATE, Mode.EDIT}), max_images=4, min_side=16, size_multiple=8)

    def __init__(self, fail: bool = False, delay: float = 0.0) -> None:
        self.requests: list[EngineRequest] = []
        self.fail = fail
        self.delay = delay

    async def generate(self, request: EngineRequest) -> list[GeneratedImage]:
        self.requests.append(request)
        await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("CUDA error: device-side assert")
        return [
            GeneratedImage(Image.new("RGB", (request.width, request.height), (seed % 256, 0, 0)), seed)
            for seed in request.seeds
        ]


class GatedEngine(RecordingEngine):
    """Each call waits until the test opens the gate: queue states without timing guesses."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def generate(self, request: EngineRequest) -> list[GeneratedImage]:
        await self.gate.wait()
        return await super().generate(request)


def make_service(tmp_path: Path, engine: Engine, **entry: object) -> ImageService:
    """The service alone over a store in ``tmp_path``: no app, no accounts (the open gate admits everything)."""
    models = [*pattern_models(), ModelEntry(id="rec", engine="rec", **entry)]  # type: ignore[arg-type]
    catalog = Catalog(models, {**default_factories(), "rec": lambda _: engine})
    media = MediaAccess(LocalMediaStore(tmp_path / "media"), UrlSigner(b"k" * 32))
    loader = ImageLoader(ImageDecoder(), ImageFetcher())
    return ImageService(catalog, media, loader, ServiceOptions(request_timeout=1.0))


def rgb(color: tuple[int, int, int], size: tuple[int, int] = (40, 20)) -> SourceImage:
    return SourceImage(Image.new("RGB", size, color), "image")


async def test_seeds_follow_the_base_seed_and_are_reported(tmp_path: Path) -> None:
    engine = RecordingEngine()
    service = make_service(tmp_path, engine)
    result = await service.run(ImageRequest(prompt="x", model="rec", n=3, seed=10, size=SizeSpec(64, 64)), "r")
    assert engine.requests[0].seeds == [10, 11, 12]
    assert [image.seed for image in result.images] == [10, 11, 12]
    random = await service.run(ImageRequest(prompt="x", model="rec", size=SizeSpec(64, 64)), "r")
    assert random.images[0].seed is not None


async def test_the_file_says_the_steps_the_engine_ran(tmp_path: Path) -> None:
    """``effort: "high"`` doubles the model's default steps: the engine and the PNG's metadata agree."""
    engine = RecordingEngine()
    service = make_service(tmp_path, engine, default_steps=10)
    high = ImageRequest(prompt="x", model="rec", seed=1, size=SizeSpec(64, 64), effort="high")
    result = await service.run(high, "r")
    assert engine.requests[0].steps == 20
    assert Image.open(io.BytesIO(result.images[0].data)).info["steps"] == "20"
    normal = await service.run(replace(high, effort="normal"), "r2")
    assert engine.requests[1].steps is None, "the engine's own default, which the catalog names"
    assert Image.open(io.BytesIO(normal.images[0].data)).info["steps"] == "10"


async def test_token_usage_is_counted_only_for_answers_that_report_it(tmp_path: Path) -> None:
    service = make_service(tmp_path, RecordingEngine())
    request = ImageRequest(prompt="a red apple", model="rec", n=2, size=SizeSpec(64, 64))
    assert (await service.run(request, "plain")).usage is None
    counted = (await service.run(replace(request, report_usage=True), "reported")).usage
    assert counted is not None and counted.text_tokens > 0 and counted.output_image_tokens > 0


async def test_several_images_are_laid_out_in_order_for_a_one_image_engine(tmp_path: Path) -> None:
    engine = RecordingEngine()
    service = make_service(tmp_path, engine)
    request = ImageRequest(prompt="image 1 beside image 2", model="rec", images=[rgb((255, 0, 0)), rgb((0, 0, 255))])
    await service.run(request, "r")
    [source] = engine.requests[0].images
    assert engine.requests[0].mode is Mode.EDIT
    assert source.getpixel((2, 2)) == (255, 0, 0) and source.getpixel((source.width - 2, 2)) == (0, 0, 255)


async def test_composition_can_be_refused_and_masks_need_support(tmp_path: Path) -> None:
    service = make_service(tmp_path, RecordingEngine(), compose="none")
    with pytest.raises(UnsupportedOperation, match="takes at most 1 input image"):
        await service.run(ImageRequest(prompt="x", model="rec", images=[rgb((1, 1, 1)), rgb((2, 2, 2))]), "r")
    with pytest.raises(UnsupportedOperation, match="does not support masks"):
        await service.run(ImageRequest(prompt="x", model="rec", images=[rgb((1, 1, 1))], mask=rgb((0, 0, 0))), "r")


async def test_unknown_model_lists_the_catalog(tmp_path: Path) -> None:
    service = make_service(tmp_path, RecordingEngine())
    with pytest.raises(ModelNotFound) as caught:
        await service.run(ImageRequest(prompt="x", model="nope"), "r")
    assert "Unknown model 'nope'" in caught.value.message and "rec" in caught.value.message


def test_check_plans_without_running_and_raises_what_refuses(tmp_path: Path) -> None:
    """What an async job is checked with before it is accepted: the plan (its model), no engine call."""
    engine = RecordingEngine()
    service = make_service(tmp_path, engine)
    plan = service.check(ImageRequest(prompt="x", model="rec", n=2))
    assert (plan.entry.id, plan.request.n) == ("rec", 2)
    with pytest.raises(ModelNotFound, match="Unknown model 'nope'"):
        service.check(ImageRequest(prompt="x", model="nope"))
    with pytest.raises(UnsupportedOperation, match="does not support masks"):
        service.check(ImageRequest(prompt="x", model="rec", images=[rgb((1, 1, 1))], mask=rgb((0, 0, 0))))
    assert engine.requests == [] and len(service.jobs) == 0


async def test_engine_failures_and_timeouts_are_translated(tmp_path: Path) -> None:
    service = make_service(tmp_path, RecordingEngine(fail=True))
    with pytest.raises(ModelError, match="failed to generate: RuntimeError"):
        await service.run(ImageRequest(prompt="x", model="rec", size=SizeSpec(64, 64)), "r")
    slow = make_service(tmp_path / "slow", RecordingEngine(delay=5))
    with pytest.raises(Timeout, match="did not finish within 1 s"):
        await slow.run(ImageRequest(prompt="x", model="rec", size=SizeSpec(64, 64)), "r")


async def test_a_full_queue_answers_at_once_with_retry_after(tmp_path: Path) -> None:
    engine = GatedEngine()
    service = make_service(tmp_path, engine, max_concurrency=1, max_queue=1)
    request = ImageRequest(prompt="x", model="rec", size=SizeSpec(64, 64))
    calls = [asyncio.create_task(service.run(request, f"r{index}")) for index in range(4)]
    await until(lambda: sum(call.done() for call in calls) == 2, what="two answers while one runs and one waits")
    refused = [call.exception() for call in calls if call.done()]
    assert all(isinstance(error, QueueFull) and error.retry_after >= 1 for error in refused), refused
    assert isinstance(refused[0], QueueFull) and "busy" in refused[0].message
    engine.gate.set()
    await asyncio.gather(*(call for call in calls if not call.done()))


class BrokenStore(LocalMediaStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.puts = 0

    async def put(self, data: bytes, *, mime_type: str, owner: str) -> str:
        self.puts += 1
        if self.puts == 2:
            raise OSError("disk full")
        return await super().put(data, mime_type=mime_type, owner=owner)


async def test_a_storage_failure_stores_nothing(tmp_path: Path) -> None:
    service = make_service(tmp_path, RecordingEngine())
    store = BrokenStore(tmp_path / "media")
    service.media.store = store
    result = await service.run(ImageRequest(prompt="x", model="rec", n=3, seed=1, size=SizeSpec(64, 64)), "r")
    assert result.storage_error and all(image.key == "" for image in result.images)
    assert [p for p in (tmp_path / "media").rglob("*") if p.is_file()] == []
    assert Image.open(io.BytesIO(result.images[0].data)).size == (64, 64), "the bytes are still there for fallbacks"


class RacedStore(BrokenStore):
    """Another consumer stores the same bytes just before this request's first put lands; the second fails."""

    async def put(self, data: bytes, *, mime_type: str, owner: str) -> str:
        if self.puts == 0:
            await LocalMediaStore.put(self, data, mime_type=mime_type, owner="alice")
        return await super().put(data, mime_type=mime_type, owner=owner)


async def test_a_storage_failure_keeps_what_another_consumer_owns(tmp_path: Path) -> None:
    """Media is content-addressed: the same bytes made for two consumers are one object. A failed store
    withdraws only this request's claims, so what alice stored meanwhile stays hers."""
    service = make_service(tmp_path, RecordingEngine())
    store = RacedStore(tmp_path / "media")
    service.media.store = store
    request = ImageRequest(prompt="x", model="rec", n=3, seed=1, size=SizeSpec(64, 64), consumer="bob")
    failed = await service.run(request, "r")
    assert failed.storage_error
    key = content_key(failed.images[0].data, failed.images[0].mime_type)
    assert await store.owners(key) == {"alice"}
    assert await store.get(key) == failed.images[0].data


def test_errors_keep_their_codes() -> None:
    assert LimnerError("x").code == "internal_error"
    assert QueueFull("x", retry_after=2.5).status == 429
