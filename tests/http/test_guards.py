"""What every request passes before a route: body cap, safe JSON, JSON content types, allowed hosts,
same-site origins, CORS only when configured, absolute URLs from trusted hosts, and 499 for a client
gone before its body was read."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from limner.accounts import tokens
from limner.accounts.service import Accounts
from limner.app import create_app
from limner.settings import Settings
from tests.support.live_server import live_server

LOOPBACK = "http://127.0.0.1:8000"

Envelope = Callable[[Any], tuple[str, str]]
"""(code, message) out of one dialect's error body."""


def nested(response: Any) -> tuple[str, str]:
    error = response.json()["error"]
    return error["code"], error["message"]


def flat(response: Any) -> tuple[str, str]:
    body = response.json()
    return body["code"], body["error"]


# The four JSON routes, each with how its dialect's envelope names the code and message.
JSON_ROUTES: list[tuple[str, Envelope]] = [
    ("/v1/images/generations", nested),  # OpenAI
    ("/api/images/generations", nested),  # AIGNE Hub (OpenAI's envelope)
    ("/v1/generation/images", nested),  # AI.ML
    ("/api/v1/generate-image", flat),  # Milady
]
ROUTE_IDS = ["openai", "aigne", "aiml", "milady"]
INVALID = {
    "/v1/images/generations": "invalid_value",
    "/api/images/generations": "invalid_value",
    "/v1/generation/images": "invalid_request",
    "/api/v1/generate-image": "invalid_request",
}
"""Each dialect's code for limner's ``invalid_request``."""


@pytest.fixture
def loopback(settings: Settings) -> Iterator[TestClient]:
    """The default open loopback server (no allowed_hosts set), reached as http://127.0.0.1:8000."""
    with TestClient(create_app(settings.with_overrides(allowed_hosts=None)), base_url=LOOPBACK) as client:
        yield client


def small_cap(settings: Settings) -> Settings:
    return settings.with_overrides(allowed_hosts=None, max_json_bytes=4096, max_upload_bytes=2048)


# --- body cap --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "envelope"), JSON_ROUTES, ids=ROUTE_IDS)
def test_a_json_body_over_the_cap_is_a_413_in_the_dialects_envelope(
    settings: Settings, path: str, envelope: Envelope
) -> None:
    with TestClient(create_app(small_cap(settings)), base_url=LOOPBACK) as client:
        body = b'{"prompt": "' + b"a" * 5000 + b'"}'
        response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert envelope(response) == ("payload_too_large", "Request body too large: JSON bodies are limited to 4096 bytes.")


async def test_the_cap_stops_reading_a_chunked_body_early(settings: Settings) -> None:
    """No Content-Length: the body is counted as it arrives, and the answer comes at the chunk that passes the
    cap; the rest is only read to be discarded (``limner.http.linger``), after the answer."""
    app = create_app(small_cap(settings))
    pulled = 0
    sent: list[dict[str, Any]] = []
    before_answer = 0

    async def receive() -> dict[str, Any]:
        nonlocal pulled, before_answer
        pulled += 1
        before_answer = before_answer if sent else pulled
        return {"type": "http.request", "body": b"x" * 1024, "more_body": pulled < 100}

    await call(app, "/v1/images/generations", receive, [(b"content-type", b"application/json")], sent)
    assert sent[0]["status"] == 413
    assert b"JSON bodies are limited to 4096 bytes" in sent[1]["body"]
    assert before_answer == 5, "4096 bytes fit in four 1 KiB chunks; the fifth passes the cap and is answered"
    assert pulled == 100 and sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


async def call(
    app: Any,
    path: str,
    receive: Callable[[], Any],
    headers: list[tuple[bytes, bytes]],
    sent: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One request straight through the ASGI app; the messages it sent back (also into ``sent``, as they go)."""
    sent = [] if sent is None else sent

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    await app(scope, receive, send)
    return sent


def test_a_declared_length_over_the_cap_is_refused_before_any_body_is_read(settings: Settings) -> None:
    with live_server(create_app(small_cap(settings))) as url:
        response = httpx.post(
            url + "/v1/generation/images",
            content=b"{" + b" " * 100_000 + b"}",
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 413
    assert nested(response)[0] == "payload_too_large"


def test_form_bodies_have_their_own_larger_cap(settings: Settings) -> None:
    capped = small_cap(settings)
    with TestClient(create_app(capped), base_url=LOOPBACK) as client:
        response = client.post(
            "/v1/images/edits",
            data={"prompt": "x"},
            files=[("images", ("a.png", b"\0" * (capped.form_body_limit + 10), "image/png"))],
        )
    assert response.status_code == 413
    assert response.json()["error"] == {
        "message": f"Request body too large: form bodies are limited to {capped.form_body_limit} bytes.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_request",
        "request_id": response.headers["x-request-id"],
    }


# --- JSON that Python's parser mishandles ----------------------------------------------------------

BAD_JSON = [
    (b"[" * 100_000 + b"]" * 100_000, "Request body nests JSON deeper than 64 levels."),
    (b'{"a":' * 70 + b"1" + b"}" * 70, "Request body nests JSON deeper than 64 levels."),
    (b'{"prompt": "\xff\xfe"}', "Request body is not valid UTF-8 (byte 12)."),
    ('{"prompt": "x"}'.encode("utf-16"), "Request body is not valid UTF-8 (byte 0)."),
    (b'{"prompt": "\\ud800"}', "Request body has a string that is not valid UTF-8: a lone surrogate escape (\\ud800)."),
    (b'{"\\udfff": 1}', "Request body has a string that is not valid UTF-8: a lone surrogate escape (\\udfff)."),
    (b'{"prompt": "x", "n": NaN}', "Request body is not valid JSON: 'NaN' is not a JSON number."),
    (b'{"prompt": "x", "n": 1e400}', "Request body has a number out of range: 1e400."),
    (b'{"prompt": "x", "n": ' + b"9" * 5000 + b"}", "Request body is not valid JSON: a number has too many digits."),
]


@pytest.mark.parametrize(("path", "envelope"), JSON_ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize(("body", "message"), BAD_JSON, ids=lambda v: str(v)[:20])
def test_hostile_json_is_a_400_naming_the_problem(
    loopback: TestClient, path: str, envelope: Envelope, body: bytes, message: str
) -> None:
    response = loopback.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert envelope(response) == (INVALID[path], message)


def test_escaped_non_ascii_text_is_still_accepted(loopback: TestClient) -> None:
    response = loopback.post(
        "/v1/images/generations",
        content=b'{"prompt": "caf\\u00e9 \\ud83d\\ude00", "size": "64x64", "response_format": "b64_json"}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text


# --- content types -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "envelope"), JSON_ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize("content_type", ["text/plain; charset=json", "text/plain", "application/x-json-ish"])
def test_json_routes_require_a_json_content_type(
    loopback: TestClient, path: str, envelope: Envelope, content_type: str
) -> None:
    """A browser sends text/plain cross-site without a preflight; JSON routes refuse it."""
    response = loopback.post(path, content=b'{"prompt": "a cat"}', headers={"content-type": content_type})
    assert response.status_code == 400
    message = envelope(response)[1]
    assert message.startswith("Unsupported content type '"), message
    assert "send application/json" in message


def test_a_json_body_in_another_charset_is_refused(loopback: TestClient) -> None:
    response = loopback.post(
        "/v1/generation/images",
        content=b'{"prompt": "a cat"}',
        headers={"content-type": "application/json; charset=latin-1"},
    )
    assert response.status_code == 400
    assert nested(response) == ("invalid_request", "Unsupported charset 'latin-1': send the JSON body as UTF-8.")


def test_json_with_a_structured_suffix_and_utf8_charset_is_json(loopback: TestClient) -> None:
    response = loopback.post(
        "/v1/images/generations",
        json=None,
        content=b'{"prompt": "a cat", "size": "64x64", "response_format": "b64_json"}',
        headers={"content-type": 'application/vnd.api+json; charset="UTF-8"'},
    )
    assert response.status_code == 200, response.text


# --- hosts ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "", "a b"])
def test_open_loopback_mode_answers_only_loopback_names(loopback: TestClient, host: str) -> None:
    """DNS rebinding: a page on evil.example that resolves to 127.0.0.1 still sends Host: evil.example."""
    response = loopback.post("/v1/images/generations", json={"prompt": "a cat"}, headers={"host": host})
    assert response.status_code == 400
    assert nested(response) == (
        "invalid_host",
        f"Host '{host or 'none'}' is not served here: add it to LIMNER_ALLOWED_HOSTS to allow it.",
    )


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "LOCALHOST", "[::1]:8000"])
def test_loopback_names_are_served(loopback: TestClient, host: str) -> None:
    assert loopback.get("/v1/models", headers={"host": host}).status_code == 200


def test_allowed_hosts_lets_in_exactly_the_names_given(settings: Settings) -> None:
    app = create_app(settings.with_overrides(host="0.0.0.0", allowed_hosts=["img.example", "*.cdn.example"]))
    with TestClient(app, base_url="http://img.example") as client:
        assert client.get("/v1/models").status_code == 503  # past the host check: no tokens yet
        assert client.get("/v1/models", headers={"host": "a.cdn.example"}).status_code == 503
        refused = client.get("/v1/models", headers={"host": "cdn.example"})
        probe = client.get("/health", headers={"host": "10.0.0.7:8000"})
    assert refused.status_code == 400 and nested(refused)[0] == "invalid_host"
    assert probe.json() == {"ok": True}, "health probes address a container by IP"


def test_a_public_bind_without_allowed_hosts_answers_any_host(settings: Settings) -> None:
    with TestClient(create_app(settings.with_overrides(host="0.0.0.0", allowed_hosts=None))) as client:
        answered = client.get("/v1/models", headers={"host": "whatever.example"})
    assert answered.status_code == 503, "past the host check (and refused for want of tokens)"


# --- origins and CORS --------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", ["http://attacker.example", "null", "http://127.0.0.1:9999", "file://"])
def test_a_foreign_web_origin_cannot_drive_the_api(loopback: TestClient, origin: str) -> None:
    response = loopback.post(
        "/v1/images/generations", json={"prompt": "a cat"}, headers={"origin": origin, "content-type": "text/plain"}
    )
    assert response.status_code == 403
    assert nested(response) == (
        "forbidden_origin",
        f"Requests from the web origin '{origin}' are not allowed: add it to LIMNER_CORS_ORIGINS to let its pages "
        "call this server.",
    )


def test_a_foreign_origin_cannot_post_a_form_either(loopback: TestClient) -> None:
    """An HTML form needs no preflight: the origin check, not the content type, stops it."""
    response = loopback.post(
        "/v1/images/generations", data={"prompt": "a cat"}, headers={"origin": "http://attacker.example"}
    )
    assert response.status_code == 403 and nested(response)[0] == "forbidden_origin"


def test_same_origin_pages_keep_working(loopback: TestClient) -> None:
    """The playground is served by limner itself: its requests carry the server's own origin."""
    response = loopback.post(
        "/v1/images/generations",
        json={"prompt": "a cat", "size": "64x64", "response_format": "b64_json"},
        headers={"origin": LOOPBACK},
    )
    assert response.status_code == 200, response.text
    assert "access-control-allow-origin" not in response.headers


A_CAT = {"prompt": "a cat", "size": "64x64", "response_format": "b64_json"}


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        ("127.0.0.1", "http://127.0.0.1:9999"),  # a Host without a port is port 80, not any port
        ("127.0.0.1:8000", "https://127.0.0.1:8000"),  # the same name and port, another scheme
        ("127.0.0.1", "https://127.0.0.1"),  # no trusted proxy said the client used HTTPS
    ],
)
def test_an_origin_is_its_scheme_host_and_port(loopback: TestClient, host: str, origin: str) -> None:
    response = loopback.post("/v1/images/generations", json=A_CAT, headers={"origin": origin, "host": host})
    assert response.status_code == 403
    assert nested(response) == (
        "forbidden_origin",
        f"Requests from the web origin '{origin}' are not allowed: add it to LIMNER_CORS_ORIGINS to let its pages "
        "call this server.",
    )


def test_a_host_without_a_port_is_the_schemes_default_port(loopback: TestClient) -> None:
    response = loopback.post(
        "/v1/images/generations", json=A_CAT, headers={"origin": "http://127.0.0.1", "host": "127.0.0.1"}
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("proxies", "status"), [(["127.0.0.1"], 200), (["10.0.0.0/8"], 403)], ids=["trusted proxy", "untrusted"]
)
def test_behind_a_tls_proxy_the_page_is_https_only_if_a_trusted_proxy_says_so(
    settings: Settings, proxies: list[str], status: int
) -> None:
    """A TLS proxy on this machine relays a page of https://api.example to limner over plain HTTP."""
    chosen = settings.with_overrides(allowed_hosts=["api.example"], trusted_proxies=proxies)
    headers = {"host": "api.example", "origin": "https://api.example", "x-forwarded-proto": "https"}
    with live_server(create_app(chosen), forwarded_allow_ips=proxies) as url:  # as limner serve runs uvicorn
        response = httpx.post(url + "/v1/images/generations", json=A_CAT, headers=headers, timeout=30)
    assert response.status_code == status, response.text
    if status == 403:
        assert nested(response)[0] == "forbidden_origin"


def test_cors_is_off_unless_origins_are_named(loopback: TestClient) -> None:
    preflight = loopback.options(
        "/v1/images/generations",
        headers={"origin": "http://app.example", "access-control-request-method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    assert preflight.status_code == 405


def test_named_cors_origins_may_call_from_the_browser(settings: Settings) -> None:
    app = create_app(settings.with_overrides(allowed_hosts=None, cors_origins=["http://app.example:3000"]))
    with TestClient(app, base_url=LOOPBACK) as client:
        preflight = client.options(
            "/v1/images/generations",
            headers={
                "origin": "http://app.example:3000",
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://app.example:3000"
        allowed = client.post(
            "/v1/images/generations",
            json={"prompt": "a cat", "size": "64x64", "response_format": "b64_json"},
            headers={"origin": "http://app.example:3000"},
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "http://app.example:3000"
        assert "x-request-id" in allowed.headers["access-control-expose-headers"].lower()
        other = client.post("/v1/images/generations", json={"prompt": "a cat"}, headers={"origin": "http://b.example"})
    assert other.status_code == 403 and nested(other)[0] == "forbidden_origin"


def test_cors_origins_must_be_bare_origins(settings: Settings) -> None:
    with pytest.raises(ValueError, match="must be scheme://host"):
        Settings(data_dir=settings.data_dir, cors_origins=["http://app.example/path"])


def test_list_settings_read_commas_from_the_environment(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    monkeypatch.setenv("LIMNER_ALLOWED_HOSTS", "img.example, *.cdn.example")
    monkeypatch.setenv("LIMNER_CORS_ORIGINS", "https://app.example")
    loaded = Settings(data_dir=settings.data_dir)
    assert loaded.allowed_hosts == ["img.example", "*.cdn.example"]
    assert loaded.cors_origins == ["https://app.example"]


# --- absolute URLs ---------------------------------------------------------------------------------


def url_of(client: TestClient, host: str | None = None, token: str | None = None) -> str:
    headers = {"host": host} if host else {}
    if token:
        headers["authorization"] = f"Bearer {token}"
    response = client.post("/v1/images/generations", json={"prompt": "a cat", "size": "64x64"}, headers=headers)
    assert response.status_code == 200, response.text
    url: str = response.json()["data"][0]["url"]
    return url


def public_bind(settings: Settings, **overrides: Any) -> tuple[Settings, str]:
    """A public bind (which needs tokens) and one token for it."""
    public = settings.with_overrides(host="0.0.0.0", allowed_hosts=None, **overrides)
    accounts = Accounts.open(public)
    try:
        return public, tokens.create_token(accounts.db, "alice").token
    finally:
        accounts.db.dispose()


def test_a_host_let_in_only_by_the_public_default_never_reaches_a_url(settings: Settings) -> None:
    """Host: evil.example on a public bind: the link stays on this server (a root-relative path)."""
    public, token = public_bind(settings)
    with TestClient(create_app(public)) as client:
        url = url_of(client, "evil.example", token)
    assert url.startswith("/media/") and "evil.example" not in url


def test_public_url_wins_over_any_host(settings: Settings) -> None:
    public, token = public_bind(settings, public_url="https://img.example")
    with TestClient(create_app(public)) as client:
        assert url_of(client, "evil.example", token).startswith("https://img.example/media/")


def test_a_named_allowed_host_makes_absolute_urls(settings: Settings) -> None:
    with TestClient(create_app(settings.with_overrides(allowed_hosts=None)), base_url=LOOPBACK) as client:
        assert url_of(client).startswith("http://127.0.0.1:8000/media/")
        assert url_of(client, "localhost:8000").startswith("http://localhost:8000/media/")


# --- a client gone before its body -------------------------------------------------------------------


async def test_a_client_gone_before_its_body_is_a_499_not_an_unhandled_error(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings)

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    with caplog.at_level(logging.INFO):
        sent = await call(
            app, "/v1/images/generations", receive, [(b"content-type", b"application/json"), (b"content-length", b"40")]
        )
    starts = [m["status"] for m in sent if m["type"] == "http.response.start"]
    assert starts in ([], [499]), "no 500: nobody is there to read an answer"
    assert "unhandled error" not in caplog.text
    metrics = app.state.limner.metrics.render().decode()
    assert 'limner_http_requests_total{dialect="shared_paths",method="POST",status="499"} 1.0' in metrics
    assert 'status="500"' not in metrics
