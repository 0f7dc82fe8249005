"""A provider's PNG goes out as it came (plus limner's metadata) when nothing about it needs changing,
and is scaled, watermarked or converted as before when something does."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from pathlib import Path

import httpx
import pytest
from PIL import Image

from limner.core.errors import ModelError
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


def answering(sent: bytes) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        n = json.loads(request.content).get("n", 1)
        return httpx.Response(200, json={"created": 1, "data": [{"b64_json": base64.b64encode(sent).decode()}] * n})

    return httpx.MockTransport(answer)


def service(tmp_path: Path, sent: bytes = SENT) -> ImageService:
    entry = ModelEntry(id="dall-e-2", engine="openai", provider_url="http://provider.test/v1")
    engine = OpenAIEngine(entry, Credential("sk-test"), transport=answering(sent))
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


def with_idat(data: bytes, payload: bytes) -> bytes:
    """``data`` with its pixel data replaced by ``payload``, every CRC right: well formed, not decodable."""
    chunk = struct.pack(">I", len(payload)) + b"IDAT" + payload + struct.pack(">I", zlib.crc32(b"IDAT" + payload))
    return data[: data.index(b"IDAT") - 4] + chunk + data[data.index(b"IEND") - 4 :]


async def test_a_provider_png_is_decompressed_only_when_its_pixels_are_needed(tmp_path: Path) -> None:
    broken = with_idat(SENT, b"not a zlib stream at all")
    run = service(tmp_path, broken).run
    as_sent = await run(ImageRequest(prompt="x", model="dall-e-2", size=SizeSpec(256, 256)), "a")
    assert idat(as_sent.images[0].data) == idat(broken), "passed through untouched: nothing looked at its pixels"
    with pytest.raises(ModelError, match="Model 'dall-e-2' returned an image that could not be decoded"):
        await run(ImageRequest(prompt="x", model="dall-e-2", size=SizeSpec(512, 512)), "b")


async def test_images_answered_inline_are_not_stored(tmp_path: Path) -> None:
    run = service(tmp_path).run
    inline = await run(ImageRequest(prompt="x", model="dall-e-2", size=SizeSpec(256, 256), links=False), "a")
    assert [(image.key, image.url) for image in inline.images] == [("", "")]
    assert not [path for path in (tmp_path / "media").rglob("*") if path.is_file()], "nothing written"
    linked = await run(ImageRequest(prompt="x", model="dall-e-2", size=SizeSpec(256, 256)), "b")
    assert linked.images[0].key and linked.images[0].url
    assert [path.name for path in (tmp_path / "media").rglob("*.png")] == [linked.images[0].key]
