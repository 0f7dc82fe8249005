"""LoRA adapters end to end: a catalog with a tiny SDXL model and two adapters, picked per request through
every dialect (OpenAI generations and edits, Milady, AIGNE Hub, AI.ML, ImagineArt), listed in ``/v1/models``,
refused with clear 400s."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers / huggingface_hub read it

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from limner.app import create_app
from limner.engines.catalog import LoraEntry, ModelEntry
from limner.settings import Settings

pytest.importorskip("peft")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    from tests.support.tiny_diffusers import build_tiny_sd
    from tests.support.tiny_families import build_tiny_sdxl
    from tests.support.tiny_loras import build_tiny_lora

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("lora-models")
    sdxl, sd = build_tiny_sdxl(root / "sdxl"), build_tiny_sd(root / "sd")
    xl = ModelEntry(
        id="tiny-sdxl",
        engine="diffusers",
        path=sdxl,
        device="cpu",
        default_steps=2,
        native_size=(64, 64),  # Milady asks for about a megapixel: made at 64x64, then scaled
        aliases=["dall-e-2", "google/gemini-2.5-flash-image", "text-to-image"],
        loras=[
            LoraEntry(name="ink", path=build_tiny_lora(sdxl, root / "ink", seed=1), description="ink wash"),
            LoraEntry(name="glow", path=build_tiny_lora(sdxl, root / "glow", seed=2).parent, weight=0.6),
            LoraEntry(name="sd-style", path=build_tiny_lora(sd, root / "sd-style", seed=3)),  # wrong base
        ],
        batch_window_ms=5,
    )
    one = ModelEntry(
        id="tiny-sd",
        engine="diffusers",
        path=sd,
        device="cpu",
        default_steps=2,
        loras=[LoraEntry(name="sketch", path=root / "sd-style" / "pytorch_lora_weights.safetensors")],
    )
    settings = Settings(data_dir=root / "data", models=[xl, one], default_model="tiny-sdxl")
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as test_client:  # a loopback Host
        yield test_client
    torch.set_num_threads(threads)


def pixels(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.size == (64, 64)
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def openai(client: TestClient, **extra: Any) -> np.ndarray:
    body = {"model": "dall-e-2", "prompt": "a fox", "size": "64x64", "response_format": "b64_json", "seed": 3}
    response = client.post("/v1/images/generations", json=body | extra)
    assert response.status_code == 200, response.text
    return pixels(base64.b64decode(response.json()["data"][0]["b64_json"]))


def milady(client: TestClient, **extra: Any) -> list[bytes]:
    body = {"prompt": "a fox", "numImages": 1}
    response = client.post("/api/v1/generate-image", json=body | extra)
    assert response.status_code == 200, response.text
    return [client.get(item["url"]).content for item in response.json()["images"]]


def test_openai_picks_adapters_per_request(client: TestClient) -> None:
    plain = openai(client)
    ink = openai(client, loras=[{"name": "ink", "weight": 1.0}])
    both = openai(client, loras=[{"name": "ink", "weight": 1.0}, {"name": "glow"}])
    assert np.abs(ink - plain).mean() > 1 and np.abs(both - ink).mean() > 0.5
    np.testing.assert_array_equal(openai(client), plain)  # the adapters were switched off again
    np.testing.assert_array_equal(openai(client, loras=[{"name": "ink"}]), ink)  # default weight 1.0


def test_openai_edit_form_takes_loras_as_json(client: TestClient) -> None:
    source = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 120, 40)).save(source, "PNG")

    def edit(loras: str | None) -> np.ndarray:
        form = {"prompt": "at night", "size": "64x64", "response_format": "b64_json", "seed": "5", "steps": "4"}
        response = client.post(
            "/v1/images/edits",
            data=form | ({"loras": loras} if loras else {}),
            files={"image": ("in.png", source.getvalue(), "image/png")},
        )
        assert response.status_code == 200, response.text
        return pixels(base64.b64decode(response.json()["data"][0]["b64_json"]))

    assert np.abs(edit(json.dumps([{"name": "ink", "weight": 1.0}])) - edit(None)).mean() > 0.5


def test_milady_picks_adapters_per_request(client: TestClient) -> None:
    [plain] = milady(client)
    [ink] = milady(client, loras=[{"name": "ink", "weight": 1.0}])
    assert Image.open(io.BytesIO(ink)).format == "PNG"
    assert plain != ink


def test_models_list_adapters(client: TestClient) -> None:
    models = {item["id"]: item for item in client.get("/v1/models").json()["data"]}
    assert models["tiny-sdxl"]["loras"] == [
        {"name": "ink", "weight": 1.0, "description": "ink wash"},
        {"name": "glow", "weight": 0.6, "description": ""},
        {"name": "sd-style", "weight": 1.0, "description": ""},
    ]
    assert [lora["name"] for lora in models["dall-e-2"]["loras"]] == ["ink", "glow", "sd-style"]
    assert [lora["name"] for lora in models["tiny-sd"]["loras"]] == ["sketch"]
    one = client.get("/v1/models/tiny-sdxl").json()
    assert one["loras"][0]["name"] == "ink"


@pytest.mark.parametrize(
    ("loras", "message"),
    [
        ([{"name": "nope"}], "Unknown LoRA 'nope' for model 'tiny-sdxl'; it offers: ink, glow, sd-style."),
        (
            [{"name": "sketch"}],
            "LoRA 'sketch' is for model 'tiny-sd', not 'tiny-sdxl'; it offers: ink, glow, sd-style.",
        ),
        (
            [{"name": "sd-style"}],
            "LoRA 'sd-style' cannot be used with this model: its weights do not fit this model",
        ),
    ],
)
def test_bad_adapters_are_400s_in_each_dialect(client: TestClient, loras: list[dict[str, Any]], message: str) -> None:
    response = client.post("/v1/images/generations", json={"model": "dall-e-2", "prompt": "a fox", "loras": loras})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"], error["type"]) == ("invalid_value", "loras", "invalid_request_error")
    assert error["message"].startswith(message)
    response = client.post("/api/v1/generate-image", json={"prompt": "a fox", "loras": loras})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_request"
    assert response.json()["error"].startswith(message)


def test_malformed_loras_are_400s(client: TestClient) -> None:
    response = client.post("/v1/images/generations", json={"prompt": "a fox", "loras": [{"weight": 1}]})
    assert response.status_code == 400 and "loras" in response.json()["error"]["message"]
    response = client.post("/api/v1/generate-image", json={"prompt": "a fox", "loras": "ink"})
    assert response.status_code == 400 and "loras" in response.json()["error"]


def test_sampler_is_chosen_per_request_from_the_allow_list(client: TestClient) -> None:
    euler_a = openai(client, scheduler="euler_a")
    assert np.abs(euler_a - openai(client)).mean() > 0.5
    np.testing.assert_array_equal(openai(client, scheduler="euler_a"), euler_a)
    response = client.post("/v1/images/generations", json={"prompt": "a fox", "scheduler": "warp"})
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(
        "Unknown sampler 'warp' for this model: expected one of euler"
    )
    assert response.json()["error"]["param"] == "scheduler"


def test_aigne_aiml_and_imagineart_pick_adapters_per_request(client: TestClient) -> None:
    ink = [{"name": "ink", "weight": 1.0}]

    def aigne(**extra: Any) -> bytes:
        body = {"model": "tiny-sdxl", "prompt": "a fox", "size": "64x64", "response_format": "b64_json", "seed": 3}
        response = client.post("/api/images/generations", json=body | extra)
        assert response.status_code == 200, response.text
        return base64.b64decode(response.json()["data"][0]["b64_json"])

    def aiml(**extra: Any) -> bytes:
        body = {"model": "tiny-sdxl", "prompt": "a fox", "size": "64x64", "response_format": "b64_json"}
        response = client.post("/v1/generation/images", json=body | extra)
        assert response.status_code == 200, response.text
        return base64.b64decode(response.json()["data"]["image"]["b64_json"])

    def imagineart(**extra: str) -> bytes:
        form = {"prompt": "a fox", "aspect_ratio": "1:1", "resolution": "1K", "seed": "3"}
        response = client.post("/v1/images/generations", data=form | extra)
        assert response.status_code == 200, response.text
        assert response.headers["x-seed"] == "3"
        return response.content

    assert np.abs(pixels(aigne(loras=ink)) - pixels(aigne())).mean() > 1
    assert aiml(loras=ink, scheduler="euler_a") != aiml()
    assert imagineart(loras=json.dumps(ink)) != imagineart()
    refused = client.post(
        "/v1/generation/images", json={"model": "tiny-sdxl", "prompt": "x", "loras": [{"name": "no"}]}
    )
    assert refused.status_code == 400 and refused.json()["error"]["message"].startswith("Unknown LoRA 'no'")
