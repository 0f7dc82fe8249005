"""A provider's PNG goes out as it came (plus limner's metadata) when nothing about it needs changing,
and is scaled, watermarked or converted as before when something does."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import httpx
from PIL import Image

from limner.core.models import ImageRequest, SizeSpec
from limner.engines.catalog import Catalog, ModelEntry
from limner.engines.registry import default_factories
from limner.engines.upstream.credentials import Credential
from limner.engines.upstream.openai import OpenAIEngine
from limner.media.encode import read_png_text
from limner.media.inputs import ImageDecoder, ImageFetcher, ImageLoader
from limner.media.signing import UrlSigner
from limner.media.store import LocalMediaStore
from limner.service.image_service import ImageService, ServiceOptions
from limner.service.media_access import MediaAccess


def provider_png() -> bytes:
    image = Image.new("RGB", (256, 256))
    image.putdata([(x, y, (x + y) % 256) for y in range(256) for x in range(256)])
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


SENT = provider_png()


def answer(request: httpx.Request) -> httpx.Response:
    n = json.loads(request.content).get("n", 1)
    return httpx.Response(200, json={"created": 1, "data": [{"b64_json": base64.b64encode(SENT).decode()}] * n})


def service(tmp_path: Path) -> ImageService:
    entry = ModelEntry(id="dall-e-2", engine="openai", provider_url="http://provider.test/v1")
    engine = OpenAIEngine(entry, Credential("sk-test"), transport=httpx.MockTransport(answer))
    catalog = Catalog([entry], {**default_factories(), "openai": lambda _: engine})
    media = MediaAccess(LocalMediaStore(tmp_path / "media"), UrlSigner(b"k" * 32))
    return ImageService(catalog, media, ImageLoader(ImageDecoder(), ImageFetcher()), ServiceOptions())


def idat(data: bytes) -> bytes:
    return data[data.index(b"IDAT") - 4 : data.index(b"IEND") - 4]


async def test_a_plain_png_of_the_asked_size_keeps_the_provider_pixel_data(tmp_path: Path) -> None:
    result = await service(tmp_path).run(
        ImageRequest(prompt="a lighthouse", model="dall-e-2", n=2, size=SizeSpec(256, 256)), "req-1"
    )
    assert [image.mime_type for image in result.images] == ["image/png", "image/png"]
    for image in result.images:
        assert idat(image.data) == idat(SENT), "not compressed again"
        decoded = Image.open(io.BytesIO(image.data))
        assert decoded.size == (256, 256) and decoded.convert("RGB").tobytes() == Image.open(io.BytesIO(SENT)).tobytes()
        text = read_png_text(image.data)
        assert text["prompt"] == "a lighthouse" and text["model"] == "dall-e-2" and text["Software"] == "limner"
        assert image.key, "stored like any other image"


async def test_anything_to_change_means_a_fresh_encoding(tmp_path: Path) -> None:
    run = service(tmp_path).run
    scaled = await run(ImageRequest(prompt="x", model="dall-e-2", size=SizeSpec(512, 512)), "a")
    marked = await run(ImageRequest(prompt="x", model="dall-e-2", size=SizeSpec(256, 256), watermark=True), "b")
    jpeg = await run(ImageRequest(prompt="x", model="dall-e-2", size=SizeSpec(256, 256), output_format="jpeg"), "c")
    for result in (scaled, marked, jpeg):
        assert idat(SENT) not in result.images[0].data
    assert Image.open(io.BytesIO(scaled.images[0].data)).size == (512, 512)
    assert jpeg.images[0].mime_type == "image/jpeg" and jpeg.images[0].data[:2] == b"\xff\xd8"
