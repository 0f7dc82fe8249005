"""Several images of one request are scaled and encoded side by side in worker threads: the same bytes as
one at a time, never on the event loop."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from limner.core.models import Capabilities, EngineRequest, GeneratedImage, ImageRequest, OutputFormat, SizeSpec
from limner.engines.base import Engine
from limner.engines.catalog import Catalog, ModelEntry
from limner.engines.registry import default_factories
from limner.media.inputs import ImageDecoder, ImageFetcher, ImageLoader
from limner.media.signing import UrlSigner
from limner.media.store import LocalMediaStore
from limner.service.image_service import ImageService, ServiceOptions
from limner.service.media_access import MediaAccess
from limner.service.stages.finish import FinishStage


class NoisyEngine(Engine):
    """Textured images that depend on the seed only (a flat colour would hide a mixed-up result)."""

    capabilities = Capabilities(native_size=(40, 24), max_images=4)

    async def generate(self, request: EngineRequest) -> list[GeneratedImage]:
        images = []
        for seed in request.seeds:
            pixels = np.random.default_rng(seed).integers(0, 256, (24, 40, 3), dtype=np.uint8)
            images.append(GeneratedImage(Image.fromarray(pixels), seed))
        return images


def make_service(tmp_path: Path) -> ImageService:
    catalog = Catalog(
        [ModelEntry(id="noisy", engine="noisy")], {**default_factories(), "noisy": lambda _: NoisyEngine()}
    )
    media = MediaAccess(LocalMediaStore(tmp_path / "media"), UrlSigner(b"k" * 32))
    return ImageService(catalog, media, ImageLoader(ImageDecoder(), ImageFetcher()), ServiceOptions())


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
async def test_several_images_encode_to_the_bytes_each_gets_alone(tmp_path: Path, fmt: OutputFormat) -> None:
    service = make_service(tmp_path)
    size = SizeSpec(160, 120)  # another shape than the engine's: padded, then resized
    together = await service.run(
        ImageRequest(prompt="x", model="noisy", n=4, seed=7, size=size, output_format=fmt), "a"
    )
    for index, image in enumerate(together.images):
        alone = await service.run(
            ImageRequest(prompt="x", model="noisy", seed=7 + index, size=size, output_format=fmt), f"b{index}"
        )
        assert image.seed == alone.images[0].seed == 7 + index
        assert image.data == alone.images[0].data, f"image {index} differs from its encoding alone"
        assert (image.width, image.height) == (160, 120)


async def test_images_are_finished_side_by_side_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each image waits at a barrier that only opens once all of them are being finished at the same time:
    finishing them one after another would break it (no timing involved)."""
    service = make_service(tmp_path)
    n = 3
    barrier = threading.Barrier(n, timeout=30)
    threads: list[int] = []
    finish_one = FinishStage._finish_one

    def at_the_barrier(self: FinishStage, *args: Any, **named: Any) -> Any:
        threads.append(threading.get_ident())
        barrier.wait()
        return finish_one(self, *args, **named)

    monkeypatch.setattr(FinishStage, "_finish_one", at_the_barrier)
    result = await service.run(ImageRequest(prompt="x", model="noisy", n=n, size=SizeSpec(80, 48)), "r")
    assert len(result.images) == n
    assert len(set(threads)) == n and threading.get_ident() not in threads
