"""Milady over real HTTP on 127.0.0.1: the reference's requests, batches, image-to-image and 429."""

from __future__ import annotations

import asyncio
import base64
import io
from pathlib import Path

import httpx
from PIL import Image

from tests.support.live_server import live_server
from tests.support.slow_server import post_slow, slow_app
from tests.support.waiting import until

URL = "/api/v1/generate-image"
AUTH = {"Authorization": "Bearer YOUR_API_KEY"}


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_batch_of_four_wide_images(pattern_server: str) -> None:
    response = httpx.post(
        pattern_server + URL,
        headers=AUTH,
        timeout=60,
        json={
            "prompt": "Cyberpunk cityscape at night",
            "model": "google/gemini-2.5-flash-image",
            "numImages": 4,
            "aspectRatio": "16:9",
        },
    )
    payload = response.json()
    assert payload["numImages"] == 4
    pixels = set()
    for item in payload["images"]:
        data = httpx.get(item["url"]).content
        image = decode(data)
        assert (image.format, image.size, item["mimeType"], item["fileSize"]) == (
            "PNG",
            (1365, 768),
            "image/png",
            len(data),
        )
        pixels.add(image.tobytes())
    assert len(pixels) == 4


def test_style_preset_and_portrait_ratio(pattern_server: str) -> None:
    response = httpx.post(
        pattern_server + URL,
        headers=AUTH,
        json={"prompt": "Portrait of a woman in natural lighting", "stylePreset": "photographic", "aspectRatio": "3:4"},
    )
    image = decode(httpx.get(response.json()["images"][0]["url"]).content)
    assert image.size == (887, 1182)


def test_image_to_image_with_a_data_url(pattern_server: str) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (120, 80), (0, 128, 255)).save(buffer, "PNG")
    source = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    response = httpx.post(
        pattern_server + URL,
        headers=AUTH,
        json={
            "prompt": "Transform this into a watercolor painting",
            "sourceImage": source,
            "model": "google/gemini-2.5-flash-image",
        },
    )
    assert response.status_code == 200
    assert decode(httpx.get(response.json()["images"][0]["url"]).content).size == (1024, 1024)


def test_busy_model_is_429_with_retry_after(tmp_path: Path) -> None:
    app, state = slow_app(tmp_path, max_concurrency=1, max_queue=0)

    async def refused_while_busy(url: str) -> httpx.Response:
        holder = asyncio.create_task(post_slow(url, "holds-slot"))
        await until(lambda: state("holds-slot") == "running")
        async with httpx.AsyncClient(timeout=30) as client:
            refused = await client.post(url + URL, json={"prompt": "x", "model": "slow"})
        holder.cancel()  # hang up: the server cancels it, so it shuts down at once
        await asyncio.gather(holder, return_exceptions=True)
        await until(lambda: state("holds-slot") == "cancelled")
        return refused

    with live_server(app) as url:
        refused = asyncio.run(refused_while_busy(url))
    assert refused.status_code == 429, refused.text
    assert refused.json()["code"] == "queue_full"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["retryAfter"] == int(refused.headers["retry-after"])
