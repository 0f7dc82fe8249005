"""ImagineArt ``/v1/images/generations`` and ``/v1/images/edits`` (multipart, PNG answers) and ``/v1/models``:
every field, enum value, default, limit, header and error, through the default (shared) mount."""

from __future__ import annotations

import struct
from typing import Any

import pillow_heif
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from limner.app import create_app
from limner.core.imagineart import EDIT_RATIOS, GENERATE_RATIOS
from limner.core.models import Mode, SizeSpec
from limner.core.sizes import resolve_size
from limner.dialects.imagineart import EditForm, GenerationForm, generation_request
from limner.engines.catalog import ModelEntry
from limner.media.encode import read_png_text
from limner.settings import Settings
from tests.dialects.conftest import decode, image_bytes
from tests.support.fakes import RecordingEngine, SingleInputEngine, factories

GENERATE = "/v1/images/generations"
EDIT = "/v1/images/edits"
MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "HEIF": "image/heif"}


def ratio_of(value: str) -> float:
    width, height = value.split(":")
    return int(width) / int(height)


def upload(
    color: tuple[int, int, int] = (200, 30, 30),
    size: tuple[int, int] = (64, 48),
    fmt: str = "PNG",
    content_type: str | None = None,
    name: str = "images",
) -> tuple[str, tuple[str, bytes, str]]:
    if fmt == "HEIF":
        pillow_heif.register_heif_opener()
    data = image_bytes(color, size, fmt)
    return name, (f"ref.{fmt.lower()}", data, content_type or MIME[fmt])


def error_of(response: Any, status: int, code: str = "invalid_request") -> str:
    assert response.status_code == status, response.text
    payload = response.json()["error"]
    assert payload["code"] == code
    assert payload["request_id"] == response.headers["x-request-id"]
    return str(payload["message"])


def png_chunks(data: bytes) -> list[bytes]:
    chunks, offset = [], 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        chunks.append(kind)
        offset += 12 + length
    return chunks


# --- translation --------------------------------------------------------------------------------------


def test_generation_defaults() -> None:
    form = GenerationForm.model_validate({"prompt": "a chef"})
    assert (form.aspect_ratio, form.resolution, form.seed, form.reasoning) == ("1:1", "2K", None, "low")
    request = generation_request(form, "alice")
    assert (request.model, request.dialect, request.consumer) == ("text-to-image", "imagineart", "alice")
    assert request.size == SizeSpec(aspect_ratio="1:1", resolution="2K")
    assert (request.seed, request.effort, request.embed_metadata) == (None, "normal", False)
    assert request.output_format == "png"


def test_edit_defaults() -> None:
    form = EditForm.model_validate({"prompt": "x"})
    assert (form.aspect_ratio, form.resolution, form.seed) == ("auto", "2K", None)


def test_ratio_lists_match_the_reference() -> None:
    assert len(GENERATE_RATIOS) == 14 and len(EDIT_RATIOS) == 12
    assert set(GENERATE_RATIOS) - set(EDIT_RATIOS) == {"4:1", "1:4"}


# --- generations ---------------------------------------------------------------------------------------


def test_generation_answers_png_bytes_with_headers(client: TestClient) -> None:
    response = client.post(GENERATE, data={"prompt": "A cinematic portrait of a chef plating ramen"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    image = decode(response.content)
    assert (image.format, image.size) == ("PNG", (2048, 2048)), "defaults: 1:1 at 2K"
    assert response.headers["x-model"] == "pattern"
    assert (response.headers["x-width"], response.headers["x-height"]) == ("2048", "2048")
    assert int(response.headers["x-seed"]) >= 0
    assert response.headers["x-request-id"].startswith("req_")


def test_clean_metadata(client: TestClient) -> None:
    data = client.post(GENERATE, data={"prompt": "secret prompt text", "resolution": "1K"}).content
    assert read_png_text(data) == {}
    assert set(png_chunks(data)) <= {b"IHDR", b"IDAT", b"IEND"}
    assert b"secret prompt text" not in data


@pytest.mark.parametrize("ratio", GENERATE_RATIOS)
def test_every_generation_aspect_ratio(client: TestClient, ratio: str) -> None:
    response = client.post(GENERATE, data={"prompt": "x", "aspect_ratio": ratio, "resolution": "1K"})
    width, height = decode(response.content).size
    assert (str(width), str(height)) == (response.headers["x-width"], response.headers["x-height"])
    assert abs(width / height - ratio_of(ratio)) < 0.01
    assert abs(width * height / 1024**2 - 1) < 0.01


@pytest.mark.parametrize("ratio", ["auto", "2:1", "9:21", "", "1:1:1"])
def test_other_generation_aspect_ratios(client: TestClient, ratio: str) -> None:
    assert "aspect_ratio" in error_of(client.post(GENERATE, data={"prompt": "x", "aspect_ratio": ratio}), 400)


@pytest.mark.parametrize(("resolution", "side"), [("1K", 1024), ("2K", 2048)])
def test_resolutions(client: TestClient, resolution: str, side: int) -> None:
    response = client.post(GENERATE, data={"prompt": "x", "resolution": resolution})
    assert decode(response.content).size == (side, side)


@pytest.mark.parametrize("resolution", ["4K", "1k", "512", ""])
def test_other_resolutions(client: TestClient, resolution: str) -> None:
    assert "resolution" in error_of(client.post(GENERATE, data={"prompt": "x", "resolution": resolution}), 400)


def test_seeds_are_deterministic_and_reported(client: TestClient) -> None:
    def run(seed: str | None, prompt: str = "a red fox") -> Any:
        fields = {"prompt": prompt, "resolution": "1K"} | ({"seed": seed} if seed is not None else {})
        return client.post(GENERATE, data=fields)

    first, again, other = run("42"), run("42"), run("43")
    assert first.content == again.content and first.headers["x-seed"] == "42"
    assert other.content != first.content and other.headers["x-seed"] == "43"
    assert run("42", "a blue fox").content != first.content
    assert run(str(2**32 - 1)).headers["x-seed"] == str(2**32 - 1)
    for random_seed in ("0", "-1", "", None):
        one, two = run(random_seed), run(random_seed)
        assert one.content != two.content, f"seed {random_seed!r} means random"
        replay = run(one.headers["x-seed"])
        assert replay.content == one.content, "X-Seed reproduces the image"


@pytest.mark.parametrize("seed", ["-2", str(2**32), "1.5", "abc"])
def test_bad_seeds(client: TestClient, seed: str) -> None:
    assert "seed" in error_of(client.post(GENERATE, data={"prompt": "x", "seed": seed}), 400)


def test_reasoning_high_doubles_the_denoising_steps(recording: TestClient, recorder: RecordingEngine) -> None:
    recording.post(GENERATE, data={"prompt": "x", "resolution": "1K", "reasoning": "low"})
    assert recorder.requests[-1].steps is None, "low: the model's default"
    recording.post(GENERATE, data={"prompt": "x", "resolution": "1K", "reasoning": "high"})
    assert recorder.requests[-1].steps == 20, "high: twice the default of 10"
    assert recorder.requests[-1].effort == "high"


def test_bad_reasoning(client: TestClient) -> None:
    assert "reasoning" in error_of(client.post(GENERATE, data={"prompt": "x", "reasoning": "medium"}), 400)


def test_prompt_limits(client: TestClient) -> None:
    assert client.post(GENERATE, data={"prompt": "p" * 4000, "resolution": "1K"}).status_code == 200
    assert "prompt" in error_of(client.post(GENERATE, data={"prompt": "p" * 4001}), 400)
    assert "prompt" in error_of(client.post(GENERATE, data={"prompt": ""}), 400)
    assert error_of(client.post(GENERATE, data={"resolution": "1K"}), 400) == "Missing required parameter: 'prompt'."


def test_unknown_fields_and_files_are_refused(client: TestClient) -> None:
    assert "'style'" in error_of(client.post(GENERATE, data={"prompt": "x", "style": "vivid"}), 400)
    message = error_of(client.post(GENERATE, data={"prompt": "x"}, files=[upload()]), 400)
    assert "use /v1/images/edits" in message


# --- edits ----------------------------------------------------------------------------------------------


def test_edit_auto_keeps_the_first_images_ratio(recording: TestClient, recorder: RecordingEngine) -> None:
    files = [upload((255, 0, 0), (300, 100)), upload((0, 0, 255), (50, 50))]
    response = recording.post(EDIT, data={"prompt": "Replace the background", "resolution": "1K"}, files=files)
    assert response.status_code == 200, response.text
    width, height = decode(response.content).size
    assert abs(width / height - 3) < 0.01
    request = recorder.requests[-1]
    assert request.mode is Mode.COMPOSE
    assert [image.getpixel((0, 0)) for image in request.images] == [(255, 0, 0), (0, 0, 255)]
    assert read_png_text(response.content) == {}


def test_edit_auto_follows_the_first_image_when_the_images_are_laid_out(settings: Settings) -> None:
    """The reference's own example: a portrait first, a landscape reference second, 2K. A model that takes one
    image gets them side by side, but the output keeps the first image's shape, not the layout's."""
    engine = SingleInputEngine()
    entry = ModelEntry(id="single", engine="single", aliases=["image-edit"], compose="layout")
    app = create_app(settings.with_overrides(models=[entry]), factories=factories(single=lambda e: engine))
    files = [upload((200, 160, 130), (300, 600), "JPEG"), upload((30, 90, 200), (640, 360))]
    with TestClient(app) as client:
        response = client.post(
            EDIT, data={"prompt": "Replace the background", "aspect_ratio": "auto", "resolution": "2K"}, files=files
        )
    assert response.status_code == 200, response.text
    expected = resolve_size(
        SizeSpec(aspect_ratio="auto", resolution="2K"), engine.capabilities, first_image=Image.new("RGB", (300, 600))
    ).output
    assert decode(response.content).size == expected
    assert expected[1] > expected[0] and abs(expected[0] / expected[1] - 0.5) < 0.01, "portrait, as image 1"
    (laid_out,) = engine.requests[-1].images
    assert laid_out.width > laid_out.height, "the engine still got both images, side by side"


@pytest.mark.parametrize("ratio", EDIT_RATIOS)
def test_every_edit_aspect_ratio(client: TestClient, ratio: str) -> None:
    response = client.post(EDIT, data={"prompt": "x", "aspect_ratio": ratio, "resolution": "1K"}, files=[upload()])
    width, height = decode(response.content).size
    assert abs(width / height - ratio_of(ratio)) < 0.01


@pytest.mark.parametrize("ratio", ["4:1", "1:4", "2:1"])
def test_edit_refuses_other_ratios(client: TestClient, ratio: str) -> None:
    response = client.post(EDIT, data={"prompt": "x", "aspect_ratio": ratio}, files=[upload()])
    assert "aspect_ratio" in error_of(response, 400)


def test_edit_default_resolution_is_2k(client: TestClient) -> None:
    response = client.post(EDIT, data={"prompt": "x"}, files=[upload(size=(64, 64))])
    assert decode(response.content).size == (2048, 2048)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "HEIF"])
def test_every_accepted_image_type(client: TestClient, fmt: str) -> None:
    response = client.post(EDIT, data={"prompt": "x", "resolution": "1K"}, files=[upload(fmt=fmt)])
    assert response.status_code == 200, response.text
    heic = upload(fmt="HEIF", content_type="image/heic")
    assert client.post(EDIT, data={"prompt": "x", "resolution": "1K"}, files=[heic]).status_code == 200


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "HEIF"])
@pytest.mark.parametrize("label", ["application/octet-stream", "text/plain", "image/gif"])
def test_an_image_is_judged_by_its_bytes_not_its_label(client: TestClient, fmt: str, label: str) -> None:
    """curl sends .webp and .heic files as application/octet-stream: the bytes decide."""
    response = client.post(EDIT, data={"prompt": "x", "resolution": "1K"}, files=[upload(fmt=fmt, content_type=label)])
    assert response.status_code == 200, response.text
    assert decode(response.content).format == "PNG"


@pytest.mark.parametrize(
    ("data", "found"),
    [
        (image_bytes(fmt="GIF"), "unsupported format GIF"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "unsupported format SVG"),
        (b"just some text", "not a valid image file"),
    ],
)
def test_bytes_of_another_kind_are_invalid_image(client: TestClient, data: bytes, found: str) -> None:
    files = [upload(), ("images", ("ref.png", data, "image/png"))]
    message = error_of(client.post(EDIT, data={"prompt": "x"}, files=files), 400, "invalid_image")
    assert message.startswith("image 2: ") and found in message


def test_undecodable_image(client: TestClient) -> None:
    files = [upload(), ("images", ("bad.png", b"\x89PNG\r\n\x1a\nnope", "image/png"))]
    assert error_of(client.post(EDIT, data={"prompt": "x"}, files=files), 400, "invalid_image").startswith("image 2:")


def test_image_count_limits(client: TestClient) -> None:
    four = [upload((index * 60, 0, 0)) for index in range(4)]
    assert client.post(EDIT, data={"prompt": "x", "resolution": "1K"}, files=four).status_code == 200
    assert "At most 4 images" in error_of(client.post(EDIT, data={"prompt": "x"}, files=[*four, upload()]), 400)
    missing = client.post(EDIT, data={"prompt": "x", "aspect_ratio": "auto"})
    assert error_of(missing, 400) == "Missing required parameter: 'images'."
    text = client.post(EDIT, data={"prompt": "x", "images": "portrait.jpg"})
    assert "must be files" in error_of(text, 400, "invalid_image")


def test_edit_seeds(client: TestClient) -> None:
    def run(seed: str) -> Any:
        return client.post(EDIT, data={"prompt": "x", "resolution": "1K", "seed": seed}, files=[upload()])

    assert run("7").content == run("7").content != run("8").content
    assert run("7").headers["x-seed"] == "7"
    assert "seed" in error_of(run("-5"), 400)


def test_edit_prompt_limits_and_unknown_fields(client: TestClient) -> None:
    assert "prompt" in error_of(client.post(EDIT, data={"prompt": "p" * 4001}, files=[upload()]), 400)
    assert "'reasoning'" in error_of(
        client.post(EDIT, data={"prompt": "x", "reasoning": "high"}, files=[upload()]), 400
    )


# --- models and unknown paths ----------------------------------------------------------------------------------


def test_models_describe_both_endpoints(client: TestClient) -> None:
    payload = client.get("/v1/models").json()
    assert payload["object"] == "list"
    generate, edit = payload["data"][:2]
    assert (generate["id"], generate["modality"], edit["id"], edit["modality"]) == (
        "text-to-image",
        "text-to-image",
        "image-edit",
        "image-to-image",
    )
    assert (generate["name"], edit["name"]) == ("ImagineArt 2.0", "ImagineArt 2.0 Edit"), "as the reference names them"
    for item in (generate, edit):
        assert {"id", "object", "created", "owned_by", "name", "modality", "parameters", "served_by"} <= set(item)
        assert item["served_by"] == item["parameters"]["model"] == "pattern", "the catalog model doing the work"
    assert (generate["parameters"]["endpoint"], edit["parameters"]["endpoint"]) == (GENERATE, EDIT)
    params = generate["parameters"]
    assert params["required"] == ["prompt"]
    props = params["properties"]
    assert list(props) == ["prompt", "aspect_ratio", "resolution", "seed", "reasoning"]
    assert (props["prompt"]["minLength"], props["prompt"]["maxLength"]) == (1, 4000)
    assert props["aspect_ratio"]["enum"] == list(GENERATE_RATIOS) and props["aspect_ratio"]["default"] == "1:1"
    assert props["resolution"]["enum"] == ["1K", "2K"] and props["resolution"]["default"] == "2K"
    assert props["resolution"]["sizes"]["2K"]["1:1"] == "2048x2048"
    assert (props["seed"]["type"], props["seed"]["minimum"], props["seed"]["maximum"]) == ("integer", -1, 2**32 - 1)
    assert props["reasoning"]["enum"] == ["low", "high"] and props["reasoning"]["default"] == "low"
    edit_props = edit["parameters"]["properties"]
    assert edit["parameters"]["required"] == ["prompt", "images"]
    assert edit_props["aspect_ratio"]["enum"] == ["auto", *EDIT_RATIOS]
    assert edit_props["aspect_ratio"]["default"] == "auto"
    assert (edit_props["images"]["minItems"], edit_props["images"]["maxItems"]) == (1, 4)
    assert "image/heic" in edit_props["images"]["mime_types"]
    assert "reasoning" not in edit_props


def test_unknown_paths_under_v1(client: TestClient) -> None:
    response = client.get("/v1/images/inpaint")
    assert "GET /v1/images/inpaint" in error_of(response, 404, "unknown_request")
    assert client.post("/v1/nothing/here", json={}).status_code == 404
    assert client.get("/elsewhere").json() == {"detail": "Not Found"}, "404s outside /v1 are unchanged"


def test_health(client: TestClient) -> None:
    assert client.get("/health").json() == {"ok": True}
