"""Controls and reference images end to end: a catalog with a tiny SDXL model, its ControlNets, T2I-Adapter
and IP-Adapter, picked per request through the dialects (OpenAI generations and edits, Milady, AIGNE Hub,
AI.ML, ImagineArt), listed in ``/v1/models``, and every refusal a 400 naming ``controls`` or
``reference_images``."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers / huggingface_hub read it

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from limner.app import create_app
from limner.engines.catalog import ControlEntry, ModelEntry, ReferenceEntry
from limner.settings import Settings

MAX_PIXELS = 100_000


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ModelEntry]]:
    from tests.support.tiny_controls import build_tiny_controlnet, build_tiny_ip_adapter, build_tiny_t2i_adapter
    from tests.support.tiny_diffusers import build_tiny_sd
    from tests.support.tiny_families import build_tiny_sdxl

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("control-models")
    sdxl, sd = build_tiny_sdxl(root / "sdxl"), build_tiny_sd(root / "sd")
    ip, encoder = build_tiny_ip_adapter(sdxl, root / "ip")
    xl = ModelEntry(
        id="tiny-sdxl",
        engine="diffusers",
        path=sdxl,
        device="cpu",
        default_steps=2,
        native_size=(64, 64),  # Milady asks for about a megapixel: made at 64x64, then scaled
        aliases=["dall-e-2", "google/gemini-2.5-flash-image", "text-to-image", "image-edit"],
        controls=[
            ControlEntry(name="canny", path=build_tiny_controlnet(sdxl, root / "canny", seed=1), kind="canny"),
            ControlEntry(
                name="depth", path=build_tiny_controlnet(sdxl, root / "depth", seed=5), kind="depth", scale=0.8
            ),
            ControlEntry(
                name="sketch", path=build_tiny_t2i_adapter(sdxl, root / "sketch"), type="t2i-adapter", kind="scribble"
            ),
            ControlEntry(name="old-pose", path=root / "canny", kind="pose", base="sd1", description="for SD 1.5"),
        ],
        ip_adapter=ReferenceEntry(path=ip, image_encoder=encoder, scale=0.7),
        batch_window_ms=5,
    )
    one = ModelEntry(
        id="tiny-sd",
        engine="diffusers",
        path=sd,
        device="cpu",
        default_steps=2,
        controls=[ControlEntry(name="sd-canny", path=build_tiny_controlnet(sd, root / "sd-canny"), kind="canny")],
    )
    yield [xl, one]
    torch.set_num_threads(threads)


def app_for(models: list[ModelEntry], data_dir: Path) -> Any:
    settings = Settings(data_dir=data_dir, models=models, default_model="tiny-sdxl", max_image_pixels=MAX_PIXELS)
    return create_app(settings)


@pytest.fixture(scope="module")
def client(models: list[ModelEntry], tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    app = app_for(models, tmp_path_factory.mktemp("data"))
    with TestClient(app, base_url="http://127.0.0.1") as test_client:  # a loopback Host
        yield test_client


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def data_url(image: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(png(image)).decode()


def circle() -> str:
    image = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(image).ellipse((12, 12, 52, 52), fill="white")
    return data_url(image)


def photo() -> str:
    image = Image.new("RGB", (64, 64), (40, 90, 200))
    ImageDraw.Draw(image).rectangle((8, 30, 56, 60), fill=(230, 180, 40))
    return data_url(image)


def pixels(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.size == (64, 64)
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def openai(client: TestClient, **extra: Any) -> np.ndarray:
    body = {"model": "dall-e-2", "prompt": "a fox", "size": "64x64", "response_format": "b64_json", "seed": 3}
    response = client.post("/v1/images/generations", json=body | extra)
    assert response.status_code == 200, response.text
    return pixels(base64.b64decode(response.json()["data"][0]["b64_json"]))


def test_openai_generations_take_controls(client: TestClient) -> None:
    plain = openai(client)
    canny = openai(client, controls=[{"name": "canny", "image": circle()}])
    zero = openai(client, controls=[{"name": "canny", "image": circle(), "scale": 0}])
    two = openai(client, controls=[{"name": "canny", "image": circle()}, {"name": "depth", "image": photo()}])
    late = openai(client, controls=[{"name": "canny", "image": circle(), "start": 0.5, "end": 1}])
    sketch = openai(client, controls=[{"name": "sketch", "image": circle(), "preprocess": "canny"}])
    assert np.abs(canny - plain).mean() > 2, "the control changes the image"
    assert np.abs(two - canny).mean() > 0.5, "a second control changes it again"
    assert np.abs(late - canny).mean() > 0.5, "its step range matters"
    assert np.abs(sketch - plain).mean() > 2, "a T2I-Adapter steers too"
    np.testing.assert_array_equal(zero, plain)  # scale 0 is no control at all
    np.testing.assert_array_equal(openai(client), plain)  # and the next request runs the model untouched


def test_canny_controls_draw_edges_unless_told_the_image_is_a_map(client: TestClient) -> None:
    from limner.core.preprocess import canny

    filled = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(filled).ellipse((12, 12, 52, 52), fill="white")
    drawn = openai(client, controls=[{"name": "canny", "image": data_url(filled)}])  # canny: the catalog's kind
    ready = openai(client, controls=[{"name": "canny", "image": data_url(canny(filled)), "preprocess": "none"}])
    raw = openai(client, controls=[{"name": "canny", "image": data_url(filled), "preprocess": "none"}])
    np.testing.assert_array_equal(drawn, ready)
    assert np.abs(raw - drawn).mean() > 0.5


def test_openai_generations_take_reference_images(client: TestClient) -> None:
    plain = openai(client)
    ref = openai(client, reference_images=[{"image": photo()}])
    zero = openai(client, reference_images=[{"image": photo(), "scale": 0}])
    both = openai(client, reference_images=[{"image": photo()}, {"image": circle()}])
    assert np.abs(ref - plain).mean() > 2 and np.abs(both - ref).mean() > 0.5
    np.testing.assert_array_equal(zero, plain)
    np.testing.assert_array_equal(openai(client, reference_images=[{"image": photo(), "scale": 0.7}]), ref)


def test_openai_edit_form_takes_controls_and_references_as_json(client: TestClient) -> None:
    source = png(Image.new("RGB", (64, 64), (200, 120, 40)))

    def edit(**fields: str) -> np.ndarray:
        form = {"prompt": "at night", "size": "64x64", "response_format": "b64_json", "seed": "5", "steps": "4"}
        response = client.post("/v1/images/edits", data=form | fields, files={"image": ("in.png", source, "image/png")})
        assert response.status_code == 200, response.text
        return pixels(base64.b64decode(response.json()["data"][0]["b64_json"]))

    plain = edit()
    assert np.abs(edit(controls=json.dumps([{"name": "canny", "image": circle()}])) - plain).mean() > 0.5
    assert np.abs(edit(reference_images=json.dumps([{"image": photo()}])) - plain).mean() > 0.5


def test_the_seeded_dialects_take_controls_and_references(client: TestClient) -> None:
    controls = [{"name": "canny", "image": circle()}]
    references = [{"image": photo()}]

    def aigne(**extra: Any) -> bytes:
        body = {"model": "tiny-sdxl", "prompt": "a fox", "size": "64x64", "response_format": "b64_json", "seed": 3}
        response = client.post("/api/images/generations", json=body | extra)
        assert response.status_code == 200, response.text
        return base64.b64decode(response.json()["data"][0]["b64_json"])

    def imagineart(**extra: str) -> bytes:
        form = {"prompt": "a fox", "aspect_ratio": "1:1", "resolution": "1K", "seed": "3"}
        response = client.post("/v1/images/generations", data=form | extra)
        assert response.status_code == 200, response.text
        return response.content

    assert np.abs(pixels(aigne(controls=controls)) - pixels(aigne())).mean() > 1
    assert np.abs(pixels(aigne(reference_images=references)) - pixels(aigne())).mean() > 1
    assert imagineart(controls=json.dumps(controls)) != imagineart()
    assert imagineart(reference_images=json.dumps(references)) != imagineart()
    refused = client.post(  # AI.ML has no seed to compare pictures by: its translation shows in a refusal
        "/v1/generation/images",
        json={"model": "tiny-sdxl", "prompt": "x", "controls": [{"name": "canny", "image": "x", "scale": 9}]},
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == "Control 'canny' scale 9 is out of range: between 0 and 2."


def test_models_list_controls_and_reference_images(client: TestClient) -> None:
    models = {item["id"]: item for item in client.get("/v1/models").json()["data"]}
    assert models["tiny-sdxl"]["controls"] == [
        {"name": "canny", "kind": "canny", "type": "controlnet", "scale": 1.0, "description": ""},
        {"name": "depth", "kind": "depth", "type": "controlnet", "scale": 0.8, "description": ""},
        {"name": "sketch", "kind": "scribble", "type": "t2i-adapter", "scale": 1.0, "description": ""},
        {"name": "old-pose", "kind": "pose", "type": "controlnet", "scale": 1.0, "description": "for SD 1.5"},
    ]
    assert models["tiny-sdxl"]["reference_images"] == {"scale": 0.7}
    assert [control["name"] for control in models["tiny-sd"]["controls"]] == ["sd-canny"]
    assert "reference_images" not in models["tiny-sd"]


def big() -> str:
    return data_url(Image.new("RGB", (400, 400), "white"))  # 160,000 pixels: past the server's 100,000


REFUSALS: list[tuple[dict[str, Any], str, str, str]] = [
    (
        {"controls": [{"name": "nope", "image": "x"}]},
        "controls",
        "invalid_value",
        "Unknown control 'nope' for model 'tiny-sdxl'; it offers: canny, depth, sketch, old-pose.",
    ),
    (
        {"controls": [{"name": "sd-canny", "image": "x"}]},
        "controls",
        "invalid_value",
        "Control 'sd-canny' is for model 'tiny-sd', not 'tiny-sdxl'; it offers: canny, depth, sketch, old-pose.",
    ),
    (
        {"controls": [{"name": "old-pose", "image": circle()}]},
        "controls",
        "invalid_value",
        "Control 'old-pose' was made for sd1 models; this model is sdxl.",
    ),
    (
        {"controls": [{"name": "canny", "image": "bm90IGFuIGltYWdl"}]},
        "controls",
        "invalid_image",
        "control 1 ('canny'): not a valid image file",
    ),
    (
        {"controls": [{"name": "canny", "image": big()}]},
        "controls",
        "invalid_image",
        f"control 1 ('canny'): 400x400 pixels exceeds the {MAX_PIXELS}-pixel limit",
    ),
    (
        {"controls": [{"name": "canny", "image": "x", "scale": 3}]},
        "controls",
        "invalid_value",
        "Control 'canny' scale 3 is out of range: between 0 and 2.",
    ),
    (
        {"controls": [{"name": "canny", "image": "x", "start": 0.6, "end": 0.4}]},
        "controls",
        "invalid_value",
        "Control 'canny' start 0.6 must be before its end 0.4.",
    ),
    (
        {"controls": [{"name": "sketch", "image": "x", "end": 0.5}]},
        "controls",
        "invalid_value",
        "Control 'sketch' is a T2I-Adapter, which steers every step: start and end are for ControlNets.",
    ),
    (
        {"controls": [{"name": "canny", "image": "x"}, {"name": "sketch", "image": "x"}]},
        "controls",
        "invalid_value",
        "ControlNets and T2I-Adapters cannot steer one image together: pick controls of one type.",
    ),
    (
        {"controls": [{"name": "canny", "image": "x"}] * 5},
        "controls",
        "invalid_value",
        "At most 4 controls per request; got 5.",
    ),
    (
        {"model": "tiny-sd", "reference_images": [{"image": "x"}]},
        "reference_images",
        "invalid_value",
        "Model 'tiny-sd' takes no reference images: it has no IP-Adapter in the catalog.",
    ),
    (
        {"reference_images": [{"image": "x", "scale": 0.5}, {"image": "x"}]},
        "reference_images",
        "invalid_value",
        "The reference images of one request share one scale (the IP-Adapter's strength); got 0.5, 0.7.",
    ),
    (
        {"reference_images": [{"image": "bm90IGFuIGltYWdl"}]},
        "reference_images",
        "invalid_image",
        "reference image 1: not a valid image file",
    ),
    (
        {"reference_images": [{"image": big()}]},
        "reference_images",
        "invalid_image",
        f"reference image 1: 400x400 pixels exceeds the {MAX_PIXELS}-pixel limit",
    ),
]


@pytest.mark.parametrize(("extra", "param", "code", "message"), REFUSALS)
def test_refusals_in_openai_and_milady(
    client: TestClient, extra: dict[str, Any], param: str, code: str, message: str
) -> None:
    body = {"model": "dall-e-2", "prompt": "a fox", "size": "64x64"} | extra
    response = client.post("/v1/images/generations", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"], error["type"]) == (code, param, "invalid_request_error")
    assert error["message"].startswith(message), error["message"]
    milady_body = {"prompt": "a fox", "model": extra.get("model", "google/gemini-2.5-flash-image")}
    response = client.post(
        "/api/v1/generate-image", json=milady_body | {k: v for k, v in extra.items() if k != "model"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == ("invalid_image" if code == "invalid_image" else "invalid_request")
    assert response.json()["error"].startswith(message), response.json()


def test_refusals_in_imagineart_forms(client: TestClient) -> None:
    form = {"prompt": "a fox", "aspect_ratio": "1:1", "resolution": "1K"}
    response = client.post(
        "/v1/images/generations", data=form | {"controls": json.dumps([{"name": "nope", "image": "x"}])}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"].startswith("Unknown control 'nope' for model 'tiny-sdxl'")


def test_malformed_controls_are_400s(client: TestClient) -> None:
    response = client.post("/v1/images/generations", json={"prompt": "a fox", "controls": [{"name": "canny"}]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "controls.0.image" and "controls" in error["message"], error
    response = client.post("/v1/images/generations", json={"prompt": "a fox", "reference_images": "x"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "reference_images"
    response = client.post("/api/v1/generate-image", json={"prompt": "a fox", "controls": "canny"})
    assert response.status_code == 400 and "controls" in response.json()["error"]


def test_the_openai_sdk_sends_controls_and_reads_refusals(
    models: list[ModelEntry], tmp_path_factory: pytest.TempPathFactory
) -> None:
    import openai as sdk

    from tests.support.live_server import live_server

    with live_server(app_for(models, tmp_path_factory.mktemp("sdk-data"))) as base:
        client = sdk.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)

        def generate(**extra: Any) -> np.ndarray:
            result = client.images.generate(
                model="dall-e-2",
                prompt="a fox",
                size="64x64",
                response_format="b64_json",
                extra_body={"seed": 3} | extra,
            )
            assert result.data and result.data[0].b64_json
            return pixels(base64.b64decode(result.data[0].b64_json))

        plain = generate()
        steered = generate(controls=[{"name": "canny", "image": circle()}])
        referenced = generate(reference_images=[{"image": photo()}])
        assert np.abs(steered - plain).mean() > 2 and np.abs(referenced - plain).mean() > 2
        with pytest.raises(sdk.BadRequestError) as refused:
            generate(controls=[{"name": "nope", "image": circle()}])
    assert refused.value.status_code == 400
    assert (refused.value.code, refused.value.param) == ("invalid_value", "controls")
    assert "Unknown control 'nope' for model 'tiny-sdxl'" in refused.value.message
