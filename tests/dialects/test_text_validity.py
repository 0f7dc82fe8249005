"""Text that is not valid Unicode, and values of the wrong JSON type, are a 400 in every dialect's envelope,
never a 500: a lone surrogate (``"cat \\ud800"``) in JSON, bytes that are not UTF-8 in a multipart field."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.dialects.conftest import image_bytes

SURROGATE = '"cat \\ud800"'
"""A JSON string whose escape decodes to a lone surrogate: Python reads it, nothing can write it as UTF-8."""
NOT_UTF8 = "cat \xed\xa0\x80".encode("latin-1")
"""The UTF-8 encoding of that surrogate: bytes that are not UTF-8."""
JSON_ROUTES = {
    "openai": ("/v1/images/generations", '{"model": "dall-e-2", "prompt": %s}'),
    "aigne": ("/api/images/generations", '{"prompt": %s}'),
    "aiml": ("/v1/generation/images", '{"model": "image-gen.pro-1.0", "prompt": %s}'),
    "milady": ("/api/v1/generate-image", '{"prompt": %s}'),
}


def message_of(dialect: str, response: Any) -> str:
    """The error message, read the way each dialect's client reads it."""
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    return error if dialect == "milady" else str(error["message"])


@pytest.mark.parametrize("dialect", sorted(JSON_ROUTES))
def test_a_lone_surrogate_is_a_400_in_every_json_dialect(client: TestClient, dialect: str) -> None:
    path, template = JSON_ROUTES[dialect]
    response = client.post(path, content=(template % SURROGATE).encode(), headers={"content-type": "application/json"})
    message = message_of(dialect, response)
    assert "surrogate" in message or "Unicode" in message or "UTF-8" in message


@pytest.mark.parametrize("dialect", sorted(JSON_ROUTES))
def test_bytes_that_are_not_utf8_are_a_400_in_every_json_dialect(client: TestClient, dialect: str) -> None:
    path, template = JSON_ROUTES[dialect]
    body = (template % '"PROMPT"').encode().replace(b"PROMPT", NOT_UTF8)
    assert "UTF-8" in message_of(dialect, client.post(path, content=body, headers={"content-type": "application/json"}))


@pytest.mark.parametrize(
    ("dialect", "path", "files"),
    [
        ("openai", "/v1/images/edits", [("image", ("a.png", image_bytes(), "image/png"))]),
        ("imagineart", "/v1/images/edits", [("images", ("a.png", image_bytes(), "image/png"))]),
        ("imagineart", "/v1/images/generations", []),
    ],
)
def test_a_multipart_field_that_is_not_utf8_is_a_400(
    client: TestClient, dialect: str, path: str, files: list[Any]
) -> None:
    boundary = "limner-test-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n'.encode() + NOT_UTF8 + b"\r\n",
    ]
    for name, (filename, data, content_type) in files:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    response = client.post(path, content=body, headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert "'prompt' is not valid utf-8 text" in error["message"]
    assert error["code"] == "invalid_request" if dialect == "imagineart" else error["type"] == "invalid_request_error"


@pytest.mark.parametrize("field", ["watermark", "stream"])
@pytest.mark.parametrize("value", ["yes", "true", 1, 0, None])
def test_aiml_booleans_are_booleans(client: TestClient, field: str, value: Any) -> None:
    body = {"model": "image-gen.pro-1.0", "prompt": "x", field: value}
    response = client.post("/v1/generation/images", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"].startswith(f"Invalid value for '{field}'") and "valid boolean" in error["message"]
