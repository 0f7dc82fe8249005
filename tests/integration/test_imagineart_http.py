"""ImagineArt over real HTTP on 127.0.0.1 with httpx, and ``/v1/models`` read by both ImagineArt and OpenAI clients."""

from __future__ import annotations

import io

import httpx
import openai
from PIL import Image

AUTH = {"Authorization": "Bearer IMAGINEART_TOKEN"}


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def png(color: tuple[int, int, int], size: tuple[int, int], fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


def test_generate_with_seeds(pattern_server: str) -> None:
    with httpx.Client(base_url=pattern_server + "/v1", headers=AUTH, timeout=60) as client:

        def run(seed: int | None) -> httpx.Response:
            data = {
                "prompt": "A cinematic portrait of a chef plating ramen",
                "aspect_ratio": "3:2",
                "resolution": "2K",
                "reasoning": "high",
            }
            response = client.post("/images/generations", data=data | ({"seed": str(seed)} if seed else {}))
            response.raise_for_status()
            return response

        first, again, other, random = run(1234), run(1234), run(1235), run(None)
        image = decode(first.content)
        assert (image.format, image.size) == ("PNG", (2508, 1672))
        assert first.content == again.content != other.content
        assert first.headers["x-seed"] == "1234" and random.headers["x-seed"].isdigit()
        assert first.headers["x-request-id"] != again.headers["x-request-id"]


def test_edit_two_references(pattern_server: str) -> None:
    files = [
        ("images", ("portrait.jpg", png((200, 150, 120), (96, 128), "JPEG"), "image/jpeg")),
        ("images", ("reference.png", png((20, 60, 200), (64, 64)), "image/png")),
    ]
    data = {"prompt": "Replace the background with a sunset beach.", "aspect_ratio": "auto", "resolution": "1K"}
    response = httpx.post(pattern_server + "/v1/images/edits", headers=AUTH, data=data, files=files, timeout=60)
    assert response.status_code == 200
    width, height = decode(response.content).size
    assert abs(width / height - 96 / 128) < 0.01


def test_models_read_by_both_clients(pattern_server: str) -> None:
    listing = httpx.get(pattern_server + "/v1/models", headers=AUTH).json()
    by_id = {item["id"]: item for item in listing["data"]}
    assert by_id["text-to-image"]["modality"] == "text-to-image"
    assert by_id["image-edit"]["parameters"]["properties"]["images"]["maxItems"] == 4
    with openai.OpenAI(base_url=pattern_server + "/v1", api_key="unused", max_retries=0) as sdk:
        ids = [model.id for model in sdk.models.list()]
    assert ids[:2] == ["text-to-image", "image-edit"] and "dall-e-2" in ids


def test_unknown_path_and_health(pattern_server: str) -> None:
    unknown = httpx.get(pattern_server + "/v1/videos", headers=AUTH)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "unknown_request"
    assert unknown.json()["error"]["request_id"] == unknown.headers["x-request-id"]
    assert httpx.get(pattern_server + "/health").json() == {"ok": True}
