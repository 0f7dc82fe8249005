"""One server, all dialects: the paths OpenAI and ImagineArt share, and every dialect mounted alone."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from limner.app import create_app
from limner.dialects.shared_paths import is_imagineart_edit
from limner.engines.catalog import ModelEntry
from limner.http.routing import FormBody, Upload
from limner.settings import Settings
from tests.dialects.conftest import decode, image_bytes

PNG = image_bytes((20, 120, 220), (64, 64))
URL = "/v1/images/generations"


def form(*files: str, **fields: str) -> FormBody:
    return FormBody(
        {name: [value] for name, value in fields.items()},
        {name: [Upload(name, "a.png", "image/png", PNG)] for name in files},
    )


@pytest.mark.parametrize(
    ("parts", "imagineart"),
    [
        (form("images"), True),
        (form("images", "image"), True),
        (form("image"), False),
        (form("image[]"), False),
        (form("image", aspect_ratio="auto"), False),
        (form(aspect_ratio="auto"), True),
        (form(resolution="1K"), True),
        (form(images="portrait.jpg"), True),
        (form(prompt="x"), False),
        (form(), False),
    ],
)
def test_edit_dispatch_rule(parts: FormBody, imagineart: bool) -> None:
    assert is_imagineart_edit(parts) is imagineart


def test_generations_by_content_type(client: TestClient) -> None:
    openai = client.post("/v1/images/generations", json={"prompt": "x", "model": "pattern", "size": "64x64"})
    assert openai.headers["content-type"] == "application/json"
    assert decode(client.get(openai.json()["data"][0]["url"]).content).size == (64, 64)
    imagine = client.post("/v1/images/generations", data={"prompt": "x", "resolution": "1K"})
    assert imagine.headers["content-type"] == "image/png"
    urlencoded = client.post(
        "/v1/images/generations",
        content=b"prompt=x&resolution=1K",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert decode(urlencoded.content).size == (1024, 1024)


def test_each_branch_answers_errors_in_its_own_envelope(client: TestClient) -> None:
    openai = client.post("/v1/images/generations", json={"model": "pattern"}).json()["error"]
    assert set(openai) == {"message", "type", "param", "code"} and openai["param"] == "prompt"
    imagine = client.post("/v1/images/generations", data={"resolution": "1K"}).json()["error"]
    assert set(imagine) == {"code", "message", "request_id"} and imagine["code"] == "invalid_request"


def test_undecided_errors_use_the_envelope_both_read(client: TestClient) -> None:
    response = client.post("/v1/images/generations", content=b"x", headers={"content-type": "text/plain"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code", "request_id"}
    assert "application/json (OpenAI) or multipart/form-data (ImagineArt)" in error["message"]
    edits = client.post("/v1/images/edits", json={"prompt": "x"})
    assert edits.status_code == 400
    assert set(edits.json()["error"]) == {"message", "type", "param", "code"}, "a JSON body is evidently OpenAI's"


def test_edits_by_form_parts(client: TestClient) -> None:
    openai = client.post(
        "/v1/images/edits",
        data={"prompt": "x", "model": "pattern", "response_format": "b64_json"},
        files=[("image", ("a.png", PNG, "image/png"))],
    )
    assert openai.status_code == 200 and "data" in openai.json()
    brackets = client.post(
        "/v1/images/edits",
        data={"prompt": "x", "model": "pattern"},
        files=[("image[]", ("a.png", PNG, "image/png")), ("image[]", ("b.png", PNG, "image/png"))],
    )
    assert brackets.status_code == 200 and "data" in brackets.json()
    imagine = client.post(
        "/v1/images/edits", data={"prompt": "x", "resolution": "1K"}, files=[("images", ("a.png", PNG, "image/png"))]
    )
    assert imagine.headers["content-type"] == "image/png"
    missing_openai = client.post("/v1/images/edits", data={"prompt": "x"}).json()["error"]
    assert (missing_openai["param"], missing_openai["type"]) == ("image", "invalid_request_error")
    missing_imagine = client.post("/v1/images/edits", data={"prompt": "x", "aspect_ratio": "auto"}).json()["error"]
    assert (missing_imagine["code"], missing_imagine["message"]) == (
        "invalid_request",
        "Missing required parameter: 'images'.",
    )


def test_models_superset(client: TestClient, settings: Settings) -> None:
    payload = client.get("/v1/models").json()
    assert payload["object"] == "list"
    ids = [item["id"] for item in payload["data"]]
    assert ids[:2] == ["text-to-image", "image-edit"]
    assert sorted(ids) == sorted({name for entry in settings.models for name in (entry.id, *entry.aliases)})
    for item in payload["data"]:
        assert item["object"] == "model" and isinstance(item["created"], int) and item["owned_by"]
        # every item in ImagineArt's shape too, so a client walking the parameters never meets a gap
        assert item["name"] and item["modality"] in ("text-to-image", "image-to-image")
        assert item["served_by"] == "pattern" or item["id"] == item["served_by"] == "pattern-slow"
        for name, schema in item["parameters"]["properties"].items():
            assert isinstance(name, str) and isinstance(schema, dict)
    dalle = next(item for item in payload["data"] if item["id"] == "dall-e-2")
    assert (dalle["name"], dalle["modality"]) == ("dall-e-2", "text-to-image")
    params = dalle["parameters"]
    assert (params["endpoint"], params["content_type"], params["required"]) == (
        "/v1/images/generations",
        "application/json",
        ["prompt"],
    )
    assert params["properties"]["prompt"]["maxLength"] == 32000
    assert "xhigh" in params["properties"]["quality"]["enum"]
    assert client.get("/v1/models/text-to-image").json()["id"] == "text-to-image"


def test_a_declared_imagineart_client_lists_only_what_it_can_select(client: TestClient) -> None:
    response = client.get("/v1/models", headers={"Limner-Dialect": "imagineart"})
    assert response.status_code == 200
    data = response.json()["data"]
    assert [item["id"] for item in data] == ["text-to-image", "image-edit"]
    assert [item["name"] for item in data] == ["ImagineArt 2.0", "ImagineArt 2.0 Edit"]
    assert {item["parameters"]["content_type"] for item in data} == {"multipart/form-data"}
    assert len(client.get("/v1/models").json()["data"]) > 2, "undeclared callers still get every model"
    assert len(client.get("/v1/models", headers={"Limner-Dialect": "openai"}).json()["data"]) > 2


@pytest.mark.parametrize(
    ("dialect", "fields", "code"),
    [
        ("imagineart", {"code", "message", "request_id"}, "unknown_request"),
        ("openai", {"message", "type", "param", "code"}, "not_found"),
        (None, {"message", "type", "param", "code", "request_id"}, "unknown_request"),
    ],
)
def test_a_declared_client_gets_its_envelope_before_a_dialect_is_chosen(
    client: TestClient, dialect: str | None, fields: set[str], code: str
) -> None:
    headers = {"Limner-Dialect": dialect} if dialect else {}
    response = client.post("/v1/models", headers=headers)
    assert response.status_code == 405
    error = response.json()["error"]
    assert set(error) == fields
    assert (error["code"], error["message"]) == (code, "Method POST is not allowed on /v1/models; use GET.")


@pytest.fixture
def one_job_each(settings: Settings) -> Iterator[TestClient]:
    """One async job per consumer, and a model slow enough to keep the first one pending."""
    slow = ModelEntry(id="slow", engine="testpattern", options={"delay": 30.0}, max_queue=8)
    tuned = settings.with_overrides(
        models=[*settings.models, slow], job_queue_per_consumer=1, job_workers=1, job_poll_seconds=0.05
    )
    with TestClient(create_app(tuned)) as test_client:
        yield test_client


def test_imagineart_queue_full_answers_in_its_own_envelope(one_job_each: TestClient) -> None:
    later = {"Prefer": "respond-async"}
    first = one_job_each.post(URL, json={"prompt": "x", "model": "slow", "size": "64x64"}, headers=later)
    assert first.status_code == 202, first.text
    try:
        refusals = [
            one_job_each.post(URL, data={"prompt": "x", "resolution": "1K"}, headers=later),
            one_job_each.post(
                "/v1/images/edits",
                data={"prompt": "x", "resolution": "1K"},
                files=[("images", ("a.png", PNG, "image/png"))],
                headers=later,
            ),
        ]
        for refused in refusals:
            assert refused.status_code == 429, refused.text
            assert refused.headers["retry-after"] == "5"
            assert refused.json() == {
                "error": {
                    "code": "rate_limited",
                    "message": "You have 1 async jobs queued or running, the most one consumer may; "
                    "submit more when some have finished.",
                    "request_id": refused.headers["x-request-id"],
                }
            }
        openai = one_job_each.post(URL, json={"prompt": "x", "size": "64x64"}, headers=later)
        assert openai.status_code == 429
        assert set(openai.json()["error"]) == {"message", "type", "param", "code"}
        assert openai.json()["error"]["code"] == "rate_limit_exceeded"
    finally:
        assert one_job_each.delete(f"/v1/jobs/{first.json()['id']}").json()["status"] == "cancelled"


# --- every dialect alone under its own prefix ---------------------------------------------------------------

PREFIXES = {"openai": "/openai", "aigne": "/aigne", "aiml": "/aiml", "milady": "/milady", "imagineart": "/imagineart"}


@pytest.fixture
def prefixed(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings.with_overrides(mounts=PREFIXES))) as test_client:
        yield test_client


def test_nothing_at_the_root_when_prefixed(prefixed: TestClient) -> None:
    for path in ("/v1/images/generations", "/v1/generation/images", "/api/v1/generate-image"):
        assert prefixed.post(path, json={"prompt": "x"}).status_code == 404
    assert prefixed.get("/v1/models").json() == {"detail": "Not Found"}
    assert prefixed.get("/health").json() == {"ok": True}


def test_openai_alone(prefixed: TestClient) -> None:
    response = prefixed.post("/openai/v1/images/generations", json={"prompt": "x", "model": "pattern"})
    assert response.status_code == 200
    multipart = prefixed.post("/openai/v1/images/generations", data={"prompt": "x"})
    assert multipart.status_code == 400 and multipart.json()["error"]["type"] == "invalid_request_error"
    models = prefixed.get("/openai/v1/models").json()["data"]
    assert "parameters" not in next(item for item in models if item["id"] == "text-to-image")


def test_imagineart_alone(prefixed: TestClient) -> None:
    base = "/imagineart"
    assert prefixed.post(base + "/v1/images/generations", data={"prompt": "x", "resolution": "1K"}).status_code == 200
    json_body = prefixed.post(base + "/v1/images/generations", json={"prompt": "x"})
    assert json_body.status_code == 400
    assert set(json_body.json()["error"]) == {"code", "message", "request_id"}
    edit = prefixed.post(
        base + "/v1/images/edits",
        data={"prompt": "x", "resolution": "1K"},
        files=[("images", ("a.png", PNG, "image/png"))],
    )
    assert edit.headers["content-type"] == "image/png"
    assert [item["id"] for item in prefixed.get(base + "/v1/models").json()["data"]] == ["text-to-image", "image-edit"]
    assert prefixed.get(base + "/health").json() == {"ok": True}
    unknown = prefixed.get(base + "/v1/unknown")
    assert unknown.status_code == 404
    assert set(unknown.json()["error"]) == {"code", "message", "request_id"}
    assert unknown.json()["error"]["code"] == "unknown_request"


def test_aiml_alone_resolves_media_against_its_base(prefixed: TestClient) -> None:
    url = prefixed.post("/aiml/v1/generation/images", json={"model": "pattern", "prompt": "x"}).json()
    backend = url["data"]["image"]["url"]
    assert backend.startswith("/v1/media/images/"), "relative to the dialect's base, as the reference client uses it"
    presigned = prefixed.get("/aiml" + backend).json()["url"]
    assert decode(prefixed.get(presigned).content).format == "PNG"


def test_milady_and_aigne_alone(prefixed: TestClient) -> None:
    milady = prefixed.post("/milady/api/v1/generate-image", json={"prompt": "x"})
    assert milady.json()["numImages"] == 1
    aigne = prefixed.post("/aigne/api/images/generations", json={"prompt": "x", "size": "256x256"})
    assert aigne.status_code == 200


@pytest.mark.parametrize(
    "mounts",
    [{"imagineart": ""}, {"openai": "/x", "imagineart": "/x"}, {"milady": "", "aiml": ""}],
)
def test_partial_mount_tables(settings: Settings, mounts: dict[str, str]) -> None:
    with TestClient(create_app(settings.with_overrides(mounts=mounts))) as client:
        prefix = mounts.get("imagineart")
        if prefix is not None:
            imagine = client.post(prefix + "/v1/images/generations", data={"prompt": "x", "resolution": "1K"})
            assert imagine.headers["content-type"] == "image/png"
            json_answer: Any = client.post(prefix + "/v1/images/generations", json={"prompt": "x", "model": "pattern"})
            assert json_answer.status_code == (200 if "openai" in mounts else 400)
        else:
            assert client.post("/v1/images/generations", json={"prompt": "x"}).status_code == 404
            assert client.post("/api/v1/generate-image", json={"prompt": "x"}).status_code == 200
            assert client.get("/v1/unknown").json() == {"detail": "Not Found"}
