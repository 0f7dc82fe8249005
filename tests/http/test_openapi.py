"""``/openapi.json`` documents every image route's request body and its answers, and tells the truth.

Each route's documented body is turned back into a request (its required fields only, values chosen
from the schema) and sent to the server: it must answer 200, in a shape its documented 200 schema
covers field for field. Missing a required field, or sending an unknown one where the schema forbids
extras, must answer 400 in the documented error envelope.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from limner.app import create_app
from limner.http import openapi
from limner.settings import Settings
from tests.dialects.conftest import image_bytes
from tests.support.fakes import consumer_from_header

PNG = image_bytes((20, 120, 220), (64, 64))
ENVELOPES = {
    "/v1/images/generations": "SharedErrorResponse",  # OpenAI (JSON) and ImagineArt (multipart)
    "/v1/images/edits": "SharedErrorResponse",
    "/v1/images/variations": "OpenAIErrorResponse",
    "/api/images/generations": "OpenAIErrorResponse",  # AIGNE Hub answers OpenAI's envelope
    "/v1/generation/images": "AimlErrorResponse",
    "/api/v1/generate-image": "MiladyErrorResponse",
}
PREFIXES = {"openai": "/openai", "aigne": "/aigne", "aiml": "/aiml", "milady": "/milady", "imagineart": "/imagineart"}
PREFIXED_ENVELOPES = {
    "/openai/v1/images/generations": "OpenAIErrorResponse",
    "/openai/v1/images/edits": "OpenAIErrorResponse",
    "/openai/v1/images/variations": "OpenAIErrorResponse",
    "/imagineart/v1/images/generations": "ImagineArtErrorResponse",
    "/imagineart/v1/images/edits": "ImagineArtErrorResponse",
    "/aigne/api/images/generations": "OpenAIErrorResponse",
    "/aiml/v1/generation/images": "AimlErrorResponse",
    "/milady/api/v1/generate-image": "MiladyErrorResponse",
}
CATALOG_MODEL = "pattern"


class Answer(Protocol):
    """What the tests read of a ``TestClient`` response."""

    status_code: int

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def text(self) -> str: ...

    def json(self) -> Any: ...


def make_client(settings: Settings) -> Iterator[TestClient]:
    app: FastAPI = create_app(settings)
    consumer_from_header(app)
    with TestClient(app) as client:
        yield client


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    yield from make_client(settings)


@pytest.fixture
def prefixed(settings: Settings) -> Iterator[TestClient]:
    yield from make_client(settings.with_overrides(mounts=PREFIXES))


# --- a small schema reader ----------------------------------------------------------------------------------


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].removeprefix(openapi.REF.format(model=""))
        schema = doc["components"]["schemas"][name]
    return schema


def ref_name(schema: dict[str, Any]) -> str:
    return str(schema["$ref"]).rsplit("/", 1)[-1]


def violations(doc: dict[str, Any], schema: dict[str, Any], value: Any, at: str = "$") -> list[str]:
    """Where ``value`` breaks ``schema``; a key the schema does not name counts, so bodies are fully documented."""
    schema = resolve(doc, schema)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            tries = [violations(doc, option, value, at) for option in schema[key]]
            return [] if any(not found for found in tries) else [f"{at}: matches no {key} ({tries})"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{at}: {value!r} not in {schema['enum']}"]
    kind = schema.get("type", "object" if "properties" in schema else None)
    checks: dict[str, Any] = {
        "string": str,
        "integer": int,
        "number": (int, float),
        "boolean": bool,
        "null": type(None),
        "array": list,
        "object": dict,
    }
    if kind is None:
        return []
    if not isinstance(value, checks[kind]) or (kind in ("integer", "number") and isinstance(value, bool)):
        return [f"{at}: {value!r} is not {kind}"]
    found: list[str] = []
    if kind == "array":
        for index, item in enumerate(value):
            found += violations(doc, schema.get("items", {}), item, f"{at}[{index}]")
    if kind == "object":
        properties = schema.get("properties", {})
        found += [f"{at}: missing {name}" for name in schema.get("required", []) if name not in value]
        for name, item in value.items():
            if name in properties:
                found += violations(doc, properties[name], item, f"{at}.{name}")
            elif properties:
                found.append(f"{at}: {name} is not documented")
    return found


# --- documented bodies back into requests ---------------------------------------------------------------------


@dataclass
class Case:
    path: str
    media_type: str
    schema: dict[str, Any]  # resolved
    name: str

    def __str__(self) -> str:
        return f"{self.path} {self.media_type} {self.name}"


def cases(doc: dict[str, Any], paths: dict[str, str]) -> list[Case]:
    """Every documented body alternative of ``paths``."""
    found = []
    for path in paths:
        for media_type, entry in doc["paths"][path]["post"]["requestBody"]["content"].items():
            for option in entry["schema"].get("anyOf", [entry["schema"]]):
                found.append(Case(path, media_type, resolve(doc, option), ref_name(option)))
    return found


def sample(name: str, prop: dict[str, Any]) -> Any:
    """A valid value for a required property, from its schema."""
    if prop.get("format") == "binary":
        return PNG
    if prop.get("type") == "array":
        return [sample(name, prop["items"])]
    if "enum" in prop:
        return prop["enum"][0]
    if name == "model":
        return CATALOG_MODEL
    kind = prop.get("type", "string")
    return {"string": "a lighthouse", "integer": prop.get("minimum", 1), "boolean": False}[kind]


def minimal(case: Case) -> dict[str, Any]:
    properties = case.schema["properties"]
    return {name: sample(name, properties[name]) for name in case.schema.get("required", [])}


def without_first_required(case: Case) -> tuple[str, dict[str, Any]]:
    """The minimal body less its first required field (a form gets an optional one: it cannot be empty)."""
    body = minimal(case)
    missing = next(iter(body))
    del body[missing]
    if case.media_type == openapi.JSON:
        return missing, body
    required = case.schema.get("required", [])
    optional = [(name, prop) for name, prop in case.schema["properties"].items() if name not in required]
    name, prop = next((name, prop) for name, prop in optional if "default" in prop or "enum" in prop)
    body[name] = prop["default"] if "default" in prop else prop["enum"][0]
    return missing, body


def send(client: TestClient, case: Case, body: dict[str, Any]) -> Answer:
    if case.media_type == openapi.JSON:
        return client.post(case.path, json=body)
    if case.media_type == openapi.URLENCODED:
        return client.post(case.path, data={name: str(value) for name, value in body.items()})
    assert case.media_type == openapi.MULTIPART
    parts: list[tuple[str, tuple[str | None, bytes | str, str | None]]] = []
    for name, value in body.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, bytes):
                parts.append((name, ("a.png", item, "image/png")))
            else:
                parts.append((name, (None, str(item), None)))  # a plain field, still multipart
    return client.post(case.path, files=parts)


def check_answer(doc: dict[str, Any], case: Case, response: Answer, status: int) -> None:
    assert response.status_code == status, f"{case}: {response.status_code} {response.text[:300]}"
    documented = doc["paths"][case.path]["post"]["responses"][str(status)]
    media_type = response.headers["content-type"].split(";")[0]
    assert media_type in documented["content"], f"{case}: {media_type} not documented for {status}"
    schema = documented["content"][media_type]["schema"]
    if media_type == openapi.JSON:
        assert violations(doc, schema, response.json()) == [], f"{case}: {response.json()}"
    else:
        assert schema == openapi.BINARY
        for name in documented["headers"]:
            assert name.lower() in response.headers, f"{case}: header {name} documented but not sent"


# --- the tests ------------------------------------------------------------------------------------------------


def test_every_ref_resolves_and_no_carrier_key_is_left(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for key, value in node.items():
                assert key != openapi.SCHEMAS_KEY
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    names = {ref.rsplit("/", 1)[-1] for ref in refs(doc)}
    assert names and names <= set(doc["components"]["schemas"]), names - set(doc["components"]["schemas"])


@pytest.mark.parametrize(
    ("app", "path", "envelope"),
    [("client", path, envelope) for path, envelope in ENVELOPES.items()]
    + [("prefixed", path, envelope) for path, envelope in PREFIXED_ENVELOPES.items()],
)
def test_each_image_route_documents_its_body_and_error_envelope(
    request: pytest.FixtureRequest, app: str, path: str, envelope: str
) -> None:
    doc = request.getfixturevalue(app).get("/openapi.json").json()
    operation = doc["paths"][path]["post"]
    for entry in operation["requestBody"]["content"].values():
        for option in entry["schema"].get("anyOf", [entry["schema"]]):
            schema = resolve(doc, option)
            assert schema["type"] == "object" and schema["properties"], option
    errors = {status: response for status, response in operation["responses"].items() if status.startswith("4")}
    assert {"400", "403", "405"} <= set(errors)
    # a 403 may also be a cross-site request, refused before routing in the neutral envelope
    allowed = {"403": ([envelope], [envelope, "RefusedResponse"], ["RefusedResponse"])}
    for status, response in errors.items():
        schema = response["content"]["application/json"]["schema"]
        names = [ref_name(option) for option in schema.get("anyOf", [schema])]
        assert names in allowed.get(status, ([envelope],)), (status, names)
    assert "Retry-After" in operation["responses"]["429"]["headers"]


def test_shared_paths_document_both_dialects(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    generations = doc["paths"]["/v1/images/generations"]["post"]
    content = generations["requestBody"]["content"]
    assert ref_name(content[openapi.JSON]["schema"]) == "OpenAIGenerationParams"
    assert ref_name(content[openapi.MULTIPART]["schema"]) == "ImagineArtGenerationForm"
    assert ref_name(content[openapi.URLENCODED]["schema"]) == "ImagineArtGenerationForm"
    assert set(generations["responses"]["200"]["content"]) == {"application/json", "image/png", "text/event-stream"}
    edits = doc["paths"]["/v1/images/edits"]["post"]["requestBody"]["content"]
    assert list(edits) == [openapi.MULTIPART]
    assert [ref_name(option) for option in edits[openapi.MULTIPART]["schema"]["anyOf"]] == [
        "OpenAIEditForm",
        "ImagineArtEditForm",
    ]
    imagine = resolve(doc, {"$ref": openapi.REF.format(model="ImagineArtEditForm")})
    assert imagine["properties"]["images"]["items"] == openapi.BINARY and "images" in imagine["required"]
    envelope = resolve(doc, {"$ref": openapi.REF.format(model="SharedErrorResponse")})
    assert [ref_name(option) for option in envelope["anyOf"]] == [
        "OpenAIErrorResponse",
        "ImagineArtErrorResponse",
        "EitherErrorResponse",
    ]
    models = doc["paths"]["/v1/models"]["get"]
    assert ref_name(models["responses"]["200"]["content"]["application/json"]["schema"]) == "SharedModelList"
    declared = next(parameter for parameter in models["parameters"] if parameter["name"] == "Limner-Dialect")
    assert (declared["in"], declared["schema"]["enum"]) == ("header", ["openai", "imagineart"])


def test_undecided_errors_match_the_shared_envelope(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    response = client.post("/v1/images/generations", content=b"x", headers={"content-type": "text/plain"})
    case = Case("/v1/images/generations", "text/plain", {}, "none")
    check_answer(doc, case, response, 400)
    assert set(response.json()["error"]) == {"message", "type", "param", "code", "request_id"}


@pytest.mark.parametrize(("app", "paths"), [("client", ENVELOPES), ("prefixed", PREFIXED_ENVELOPES)])
def test_documented_bodies_are_what_the_server_accepts(
    request: pytest.FixtureRequest, app: str, paths: dict[str, str]
) -> None:
    app_client: TestClient = request.getfixturevalue(app)
    doc = app_client.get("/openapi.json").json()
    all_cases = cases(doc, paths)
    # six routes; generations three ways where ImagineArt is (JSON, multipart, urlencoded), edits two
    assert len(all_cases) == 9, [str(case) for case in all_cases]
    for case in all_cases:
        body = minimal(case)
        check_answer(doc, case, send(app_client, case, body), 200)
        missing, incomplete = without_first_required(case)
        response = send(app_client, case, incomplete)
        check_answer(doc, case, response, 400)
        assert f"{missing}" in response.text, f"{case}: {response.text}"
        unknown = send(app_client, case, {**body, "unknown_field": "x"})
        if case.schema.get("additionalProperties") is False:
            check_answer(doc, case, unknown, 400)
            assert "unknown_field" in unknown.text, f"{case}: {unknown.text}"
        else:
            check_answer(doc, case, unknown, 200)  # the dialect ignores unknown fields, like its reference


def test_prefixed_imagineart_answers_png_not_json(prefixed: TestClient) -> None:
    doc = prefixed.get("/openapi.json").json()
    ok = doc["paths"]["/imagineart/v1/images/generations"]["post"]["responses"]["200"]
    assert set(ok["content"]) == {"image/png"}
    assert {"X-Seed", "X-Model", "X-Width", "X-Height"} <= set(ok["headers"])
    openai_json = doc["paths"]["/openai/v1/images/generations"]["post"]["requestBody"]["content"]
    assert set(openai_json) == {openapi.JSON}


def test_non_image_routes_document_their_answers(client: TestClient, prefixed: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    expected = {
        ("/v1/models/{model_id}", "ModelObject"),
        ("/v1/media/images/{path}", "AimlMediaUrl"),
        ("/v1/jobs/{request_id}", "JobAnswer"),
    }
    for path, model in expected:
        responses = doc["paths"][path]["get"]["responses"]
        assert ref_name(responses["200"]["content"]["application/json"]["schema"]) == model
        assert "401" in responses
    made = client.post("/v1/generation/images", json={"model": CATALOG_MODEL, "prompt": "x"})
    for path, answer in (
        ("/v1/jobs/{request_id}", client.get(f"/v1/jobs/{made.headers['x-request-id']}")),
        ("/v1/media/images/{path}", client.get(made.json()["data"]["image"]["url"])),
    ):
        schema = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert answer.status_code == 200 and violations(doc, schema, answer.json()) == [], answer.text
    preview = doc["paths"]["/v1/jobs/{request_id}/preview"]["get"]["responses"]
    assert set(preview["200"]["content"]) == {"image/*"} and "404" in preview
    listed = client.get("/v1/models")
    assert listed.status_code == 200, listed.text
    models = doc["paths"]["/v1/models"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert violations(doc, models, listed.json()) == []
    prefixed_doc = prefixed.get("/openapi.json").json()
    for path, model in (("/openai/v1/models", "ModelList"), ("/imagineart/v1/models", "ImagineArtModelList")):
        schema = prefixed_doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert ref_name(schema) == model
        answer = prefixed.get(path)
        assert answer.status_code == 200 and violations(prefixed_doc, schema, answer.json()) == [], answer.text


# --- answers given outside a handler, and by limner's own routes ------------------------------------------------

ADMIN = "admin-" + "f" * 32


def documented_error(doc: dict[str, Any], path: str, method: str, response: Answer, status: int) -> dict[str, Any]:
    """``response``'s error, once its status is documented for ``method path``, its body covered by that
    status's schema and every header it names sent."""
    assert response.status_code == status, response.text
    responses = doc["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path}: {status} is not documented"
    documented = responses[str(status)]
    assert violations(doc, documented["content"]["application/json"]["schema"], response.json()) == [], response.text
    for name in documented.get("headers", {}):
        assert name.lower() in response.headers, f"{method.upper()} {path}: header {name} documented but not sent"
    body = response.json()
    return body["error"] if isinstance(body["error"], dict) else {"message": body["error"], "code": body["code"]}


@pytest.mark.parametrize(
    ("app", "method", "path", "documented", "code"),
    [
        ("client", "GET", "/v1/images/generations", ("post", "/v1/images/generations"), "unknown_request"),
        ("client", "PUT", "/v1/images/edits", ("post", "/v1/images/edits"), "unknown_request"),
        ("client", "POST", "/v1/models", ("get", "/v1/models"), "unknown_request"),
        ("client", "GET", "/v1/images/variations", ("post", "/v1/images/variations"), "not_found"),
        ("client", "DELETE", "/v1/models/dall-e-2", ("get", "/v1/models/{model_id}"), "not_found"),
        ("client", "GET", "/v1/generation/images", ("post", "/v1/generation/images"), "not_found"),
        ("client", "GET", "/api/v1/generate-image", ("post", "/api/v1/generate-image"), "unknown_request"),
        ("client", "POST", "/v1/jobs/job_x/result", ("get", "/v1/jobs/{request_id}/result"), "not_found"),
        (
            "prefixed",
            "GET",
            "/imagineart/v1/images/generations",
            ("post", "/imagineart/v1/images/generations"),
            "unknown_request",
        ),
    ],
)
def test_a_wrong_method_is_a_documented_405(
    request: pytest.FixtureRequest, app: str, method: str, path: str, documented: tuple[str, str], code: str
) -> None:
    app_client: TestClient = request.getfixturevalue(app)
    doc = app_client.get("/openapi.json").json()
    response = app_client.request(method, path)
    error = documented_error(doc, documented[1], documented[0], response, 405)
    allow = documented[0].upper()
    assert response.headers["allow"] == allow
    assert (error["code"], error["message"]) == (code, f"Method {method} is not allowed on {path}; use {allow}.")


@pytest.mark.parametrize(
    ("app", "path", "body"),
    [
        ("prefixed", "/imagineart/v1/images/generations", {"data": {"prompt": "x"}}),
        ("client", "/v1/generation/images", {"json": {"model": CATALOG_MODEL, "prompt": "x"}}),
        ("client", "/v1/images/generations", {"json": {"prompt": "x"}}),
    ],
)
def test_a_cross_site_post_is_a_documented_403(
    request: pytest.FixtureRequest, app: str, path: str, body: dict[str, Any]
) -> None:
    app_client: TestClient = request.getfixturevalue(app)
    doc = app_client.get("/openapi.json").json()
    response = app_client.post(path, headers={"Origin": "https://elsewhere.example"}, **body)
    error = documented_error(doc, path, "post", response, 403)
    assert (error["code"], error["message"]) == (
        "forbidden_origin",
        "Requests from the web origin 'https://elsewhere.example' are not allowed: add it to LIMNER_CORS_ORIGINS "
        "to let its pages call this server.",
    )


def test_signed_media_refusals_are_documented(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    forged = client.get("/media/nothing.png", params={"expires": 1, "signature": "x"})
    error = documented_error(doc, "/media/{key}", "get", forged, 403)
    assert (error["code"], error["message"]) == ("forbidden", "This link is invalid or has expired.")
    gone = client.get(client.app.state.limner.signer.path_for("nothing.png"))  # type: ignore[attr-defined]
    error = documented_error(doc, "/media/{key}", "get", gone, 404)
    assert (error["code"], error["message"]) == ("not_found", "No such image.")
    assert set(doc["paths"]["/media/{key}"]["get"]["responses"]["200"]["content"]) == set(openapi.IMAGE_TYPES)


def test_admin_and_operator_refusals_are_documented(settings: Settings, client: TestClient) -> None:
    disabled = client.get("/admin/consumers")
    error = documented_error(client.get("/openapi.json").json(), "/admin/consumers", "get", disabled, 403)
    assert (error["code"], error["message"]) == (
        "forbidden",
        "The admin API is disabled: set LIMNER_ADMIN_TOKEN to enable it.",
    )
    tuned = settings.with_overrides(admin_token=ADMIN, metrics_token="metrics-" + "e" * 32)
    for admin in make_client(tuned):
        doc = admin.get("/openapi.json").json()
        bearer = {"Authorization": f"Bearer {ADMIN}"}
        cases: list[tuple[str, str, Answer, int, str, str]] = [
            (
                "/admin/consumers",
                "get",
                admin.get("/admin/consumers"),
                401,
                "missing_bearer_token",
                "Missing bearer token: send 'Authorization: Bearer <admin token>'.",
            ),
            (
                "/admin/consumers",
                "get",
                admin.get("/admin/consumers", headers={"Authorization": "Bearer nope"}),
                401,
                "invalid_token",
                "Invalid admin token.",
            ),
            (
                "/admin/consumers/{name}",
                "get",
                admin.get("/admin/consumers/nobody", headers=bearer),
                404,
                "unknown_request",
                "No consumer named 'nobody'.",
            ),
            (
                "/admin/consumers",
                "post",
                admin.post("/admin/consumers", json={"name": "x" * 65}, headers=bearer),
                400,
                "invalid_request",
                "Invalid 'name': String should have at most 64 characters.",
            ),
            (
                "/limner/models",
                "get",
                admin.get("/limner/models"),
                401,
                "invalid_token",
                "Send 'Authorization: Bearer <metrics token>'.",
            ),
        ]
        for path, method, response, status, code, message in cases:
            error = documented_error(doc, path, method, response, status)
            assert (error["code"], error["message"]) == (code, message)


def test_docs_page_still_loads(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and "swagger" in page.text.lower()


def test_form_fields_are_never_null_and_files_are_binary() -> None:
    class Form(BaseModel):
        prompt: str
        seed: int | None = Field(None, ge=0)

    body = openapi.form_body(
        Form, files=[openapi.FileField("image", "the image"), openapi.FileField("mask", "m", False)]
    )
    schema = body.schemas["Form"]
    assert schema["properties"]["seed"] == {"type": "integer", "minimum": 0, "title": "Seed"}
    assert schema["properties"]["image"] == {**openapi.BINARY, "description": "the image"}
    assert schema["required"] == ["prompt", "image"]
    assert openapi.request_body(body)["requestBody"]["content"][openapi.MULTIPART]["schema"] == body.ref


def test_two_different_schemas_of_one_name_are_refused() -> None:
    class Form(BaseModel):
        prompt: str

    operation = openapi.request_body(openapi.json_body(Form, name="Shared"))
    document: dict[str, Any] = {"paths": {"/a": {"post": operation}}, "components": {"schemas": {"Shared": {}}}}
    with pytest.raises(ValueError, match="Shared"):
        openapi.register_schemas(document)
