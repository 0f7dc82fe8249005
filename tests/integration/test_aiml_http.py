"""AI.ML over real HTTP on 127.0.0.1: generate, resolve, download; edit and compose from image URLs."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image, ImageStat

from limner.app import create_app
from limner.settings import Settings
from tests.support.file_server import file_server
from tests.support.live_server import live_server

AUTH = {"Authorization": "Bearer AIML_API_KEY"}


def png(color: tuple[int, int, int], size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.fixture
def sources() -> Iterator[str]:
    with file_server(
        {
            "/source_image.png": (png((240, 240, 240), (300, 200)), "image/png"),
            "/red.png": (png((255, 0, 0), (64, 64)), "image/png"),
            "/blue.png": (png((0, 0, 255), (64, 64)), "image/png"),
        }
    ) as base:
        yield base


@pytest.fixture
def server(settings: Settings) -> Iterator[str]:
    """Source images live on loopback here, so this server may fetch private addresses."""
    with live_server(create_app(settings.with_overrides(fetch_allow_private=True))) as url:
        yield url


def generate(server: str, **fields: object) -> dict:
    body = {
        "model": "image-gen.pro-1.0",
        "prompt": "A girl and a cow plushie on a roller coaster at sunrise.",
        "sequential_image_generation": "disabled",
        "response_format": "url",
        "size": "2K",
        "stream": False,
        "watermark": False,
        **fields,
    }
    response = httpx.post(server + "/v1/generation/images", json=body, headers=AUTH, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["data"]["image"]


def download(server: str, backend_url: str) -> Image.Image:
    resolved = httpx.get(server + backend_url, headers=AUTH)
    assert resolved.status_code == 200, resolved.text
    presigned = resolved.json()["url"]
    assert presigned.startswith(server + "/media/")
    return decode(httpx.get(presigned).content)


def test_three_step_flow(server: str) -> None:
    image = download(server, generate(server)["url"])
    assert (image.format, image.size) == ("PNG", (2048, 2048))


def test_edit_from_url_in_every_response_format(server: str, sources: str) -> None:
    url = generate(server, image=sources + "/source_image.png")["url"]
    assert download(server, url).size == (2508, 1672), "2K at the source's 3:2"
    presigned = generate(server, image=sources + "/source_image.png", response_format="presigned_url")["url"]
    assert decode(httpx.get(presigned).content).format == "PNG"
    inline = generate(server, image=sources + "/source_image.png", response_format="b64_json", size="1K")
    assert decode(base64.b64decode(inline["b64_json"])).size == (1254, 836)


def test_compose_keeps_image_order(server: str, sources: str) -> None:
    def mean(order: list[str]) -> list[float]:
        url = generate(server, image=[sources + name for name in order], size="1K")["url"]
        return ImageStat.Stat(download(server, url).convert("RGB")).mean

    red_first, blue_first = mean(["/red.png", "/blue.png"]), mean(["/blue.png", "/red.png"])
    assert red_first[0] > blue_first[0] and red_first[2] < blue_first[2], "image 1 leads the composition"


def test_unreachable_source_image(server: str, sources: str) -> None:
    response = httpx.post(
        server + "/v1/generation/images",
        json={"model": "image-gen.pro-1.0", "prompt": "x", "image": sources + "/missing.png"},
        headers=AUTH,
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_image"


def test_private_addresses_are_refused_by_default(pattern_server: str, sources: str) -> None:
    response = httpx.post(
        pattern_server + "/v1/generation/images",
        json={"model": "image-gen.pro-1.0", "prompt": "x", "image": sources + "/red.png"},
        headers=AUTH,
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_image"


def test_watermark_is_visible(server: str) -> None:
    plain = generate(server, size="512x512", watermark=False, response_format="b64_json")
    marked = generate(server, size="512x512", watermark=True, response_format="b64_json")
    corner = (384, 448, 512, 512)
    for item in (plain, marked):
        assert decode(base64.b64decode(item["b64_json"])).size == (512, 512)
    marked_corner = decode(base64.b64decode(marked["b64_json"])).convert("RGB").crop(corner)
    assert ImageStat.Stat(marked_corner.convert("L")).extrema[0][1] >= 200, "white watermark text"
