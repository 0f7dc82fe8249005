"""The AI.ML, Milady and ImagineArt dialects through a real (tiny, random-weight) diffusers pipeline.

The catalog routes every dialect's default model name to a tiny Stable Diffusion directory built
offline by ``tests.support.tiny_diffusers``; it generates at 64x64 (``native_size``) and limner scales
to the requested size, so these tests exercise the real loading and pipeline code in seconds.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from limner.app import create_app
from limner.config.defaults import DIALECT_DEFAULT_ALIASES
from limner.engines.catalog import ModelEntry
from limner.settings import Settings
from tests.support.images import pixels
from tests.support.live_server import live_server

pytest.importorskip("diffusers")


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.support.tiny_diffusers import build_tiny_sd

    weights = build_tiny_sd(tmp_path_factory.mktemp("tiny-sd"))
    entry = ModelEntry(
        id="tiny-sd",
        engine="diffusers",
        path=weights,
        device="cpu",
        aliases=list(DIALECT_DEFAULT_ALIASES),
        native_size=(64, 64),
        default_steps=2,
        max_queue=8,
    )
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), models=[entry], default_model="tiny-sd")
    with live_server(create_app(settings)) as url:
        yield url


def test_aiml(server: str) -> None:
    response = httpx.post(
        server + "/v1/generation/images",
        timeout=120,
        json={"model": "image-gen.pro-1.0", "prompt": "a forest", "size": "1K", "response_format": "b64_json"},
    )
    assert response.status_code == 200, response.text
    image = decode(base64.b64decode(response.json()["data"]["image"]["b64_json"]))
    assert (image.format, image.size) == ("PNG", (1024, 1024))


def test_milady_batch(server: str) -> None:
    response = httpx.post(
        server + "/api/v1/generate-image",
        timeout=120,
        json={"prompt": "a lighthouse", "numImages": 2, "aspectRatio": "16:9", "stylePreset": "cinematic"},
    )
    assert response.status_code == 200, response.text
    images = [decode(httpx.get(item["url"]).content) for item in response.json()["images"]]
    assert [image.size for image in images] == [(1368, 768)] * 2, "16:9, sides multiples of 8"
    assert images[0].tobytes() != images[1].tobytes()


def test_imagineart_generate_and_edit(server: str, tmp_path: Path) -> None:
    def generate(seed: str) -> httpx.Response:
        return httpx.post(
            server + "/v1/images/generations",
            timeout=120,
            data={"prompt": "a chef", "aspect_ratio": "1:1", "resolution": "1K", "seed": seed},
        )

    first, again, other = generate("5"), generate("5"), generate("6")
    assert first.status_code == 200, first.text
    assert decode(first.content).size == (1024, 1024)
    assert pixels(first.content) == pixels(again.content) != pixels(other.content)
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), (200, 100, 50)).save(buffer, "PNG")
    edit = httpx.post(
        server + "/v1/images/edits",
        timeout=120,
        data={"prompt": "at night", "resolution": "1K"},
        files=[("images", ("in.png", buffer.getvalue(), "image/png"))],
    )
    assert edit.status_code == 200, edit.text
    width, height = decode(edit.content).size
    assert abs(width / height - 1.5) < 0.01


def test_openai_stream_previews_decoded_by_the_pipelines_vae(server: str) -> None:
    import openai

    with openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=120) as client:
        events = list(
            client.images.generate(
                model="dall-e-2", prompt="a lighthouse", size="256x256", stream=True, partial_images=2,
                extra_body={"steps": 6},
            )
        )  # fmt: skip
    assert [event.type for event in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    partial, final = (decode(base64.b64decode(events[index].b64_json)) for index in (0, -1))
    assert partial.size == final.size == (256, 256), "previews are scaled like the final image"
    assert partial.tobytes() != final.tobytes()
