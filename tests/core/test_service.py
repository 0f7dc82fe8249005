"""ImageService: mode planning, composition, seeds, queueing, errors, and all-or-nothing storage."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from PIL import Image

from limner.app import build_state
from limner.core.errors import LimnerError, ModelError, ModelNotFound, QueueFull, Timeout, UnsupportedOperation
from limner.core.models import EngineRequest, GeneratedImage, ImageRequest, Mode, SizeSpec, SourceImage
from limner.engines.base import Capabilities, Engine
from limner.engines.catalog import ModelEntry
from limner.http.deps import AppState
from limner.media.store import LocalMediaStore
from limner.settings import Settings
from tests.conftest import pattern_models


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


def make_state(tmp_path: Path, engine: Engine, **entry: object) -> AppState:
    models = [*pattern_models(), ModelEntry(id="rec", engine="rec", **entry)]  # type: ignore[arg-type]
    settings = Settings(data_dir=tmp_path, models=models, default_model="pattern", request_timeout=1.0)
    return build_state(
        settings, {**__import__("limner.engines.registry", fromlist=["x"]).default_factories(), "rec": lambda _: engine}
    )


def rgb(color: tuple[int, int, int], size: tuple[int, int] = (40, 20)) -> SourceImage:
    return SourceImage(Image.new("RGB", size, color), "image")


async def test_seeds_follow_the_base_seed_and_are_reported(tmp_path: Path) -> None:
    engine = RecordingEngine()
    state = make_state(tmp_path, engine)
    result = await state.service.run(ImageRequest(prompt="x", model="rec", n=3, seed=10, size=SizeSpec(64, 64)), "r")
    assert engine.requests[0].seeds == [10, 11, 12]
    assert [image.seed for image in result.images] == [10, 11, 12]
    random = await state.service.run(ImageRequest(prompt="x", model="rec", size=SizeSpec(64, 64)), "r")
    assert random.images[0].seed is not None


async def test_several_images_are_laid_out_in_order_for_a_one_image_engine(tmp_path: Path) -> None:
    engine = RecordingEngine()
    state = make_state(tmp_path, engine)
    request = ImageRequest(prompt="image 1 beside image 2", model="rec", images=[rgb((255, 0, 0)), rgb((0, 0, 255))])
    await state.service.run(request, "r")
    [source] = engine.requests[0].images
    assert engine.requests[0].mode is Mode.EDIT
    assert source.getpixel((2, 2)) == (255, 0, 0) and source.getpixel((source.width - 2, 2)) == (0, 0, 255)


async def test_composition_can_be_refused_and_masks_need_support(tmp_path: Path) -> None:
    state = make_state(tmp_path, RecordingEngine(), compose="none")
    with pytest.raises(UnsupportedOperation, match="takes at most 1 input image"):
        await state.service.run(ImageRequest(prompt="x", model="rec", images=[rgb((1, 1, 1)), rgb((2, 2, 2))]), "r")
    with pytest.raises(UnsupportedOperation, match="does not support masks"):
        await state.service.run(
            ImageRequest(prompt="x", model="rec", images=[rgb((1, 1, 1))], mask=rgb((0, 0, 0))), "r"
        )


async def test_unknown_model_lists_the_catalog(tmp_path: Path) -> None:
    state = make_state(tmp_path, RecordingEngine())
    with pytest.raises(ModelNotFound) as caught:
        await state.service.run(ImageRequest(prompt="x", model="nope"), "r")
    assert "Unknown model 'nope'" in caught.value.message and "rec" in caught.value.message


async def test_engine_failures_and_timeouts_are_translated(tmp_path: Path) -> None:
    state = make_state(tmp_path, RecordingEngine(fail=True))
    with pytest.raises(ModelError, match="failed to generate: RuntimeError"):
        await state.service.run(ImageRequest(prompt="x", model="rec", size=SizeSpec(64, 64)), "r")
    slow = make_state(tmp_path / "slow", RecordingEngine(delay=5))
    with pytest.raises(Timeout, match="did not finish within 1 s"):
        await slow.service.run(ImageRequest(prompt="x", model="rec", size=SizeSpec(64, 64)), "r")


async def test_a_full_queue_answers_at_once_with_retry_after(tmp_path: Path) -> None:
    state = make_state(tmp_path, RecordingEngine(delay=0.3), max_concurrency=1, max_queue=1)
    request = ImageRequest(prompt="x", model="rec", size=SizeSpec(64, 64))
    outcomes = await asyncio.gather(*(state.service.run(request, "r") for _ in range(4)), return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, QueueFull)]
    assert len(refused) == 2 and all(o.retry_after >= 1 for o in refused)
    assert "busy" in refused[0].message


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
    state = make_state(tmp_path, RecordingEngine())
    store = BrokenStore(tmp_path / "media")
    state.service.store = store
    result = await state.service.run(ImageRequest(prompt="x", model="rec", n=3, seed=1, size=SizeSpec(64, 64)), "r")
    assert result.storage_error and all(image.key == "" for image in result.images)
    assert [p for p in (tmp_path / "media").rglob("*") if p.is_file()] == []
    assert Image.open(io.BytesIO(result.images[0].data)).size == (64, 64), "the bytes are still there for fallbacks"


def test_errors_keep_their_codes() -> None:
    assert LimnerError("x").code == "internal_error"
    assert QueueFull("x", retry_after=2.5).status == 429
