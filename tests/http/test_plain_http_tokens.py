"""ImagineArt's reference: "Use HTTPS exclusively. Tokens transmitted over plain HTTP are immediately
revoked." limner does exactly that for the ImagineArt dialect when the request came from beyond this
machine (judged by its peer, not the bind), believing ``X-Forwarded-Proto: https`` only from
``LIMNER_TRUSTED_PROXIES``; ``limner serve --tls-cert`` lets it terminate TLS itself."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from fastapi.testclient import TestClient

from limner.accounts import tokens
from limner.accounts.service import Accounts
from limner.app import create_app
from limner.config.defaults import DIALECT_DEFAULT_ALIASES
from limner.settings import Settings
from tests.support.live_server import live_server
from tests.support.waiting import wait_until

REVOKED = (
    "This API token was sent over plain HTTP, so it has been revoked: tokens must travel over HTTPS only. "
    "Create a new token and call this server at an https:// address."
)
FORM = {"prompt": "a cat", "resolution": "1K"}


def public(settings: Settings, **overrides: Any) -> tuple[Settings, str]:
    """A non-loopback bind with one token (``overrides`` may change the bind too)."""
    chosen = settings.with_overrides(**{"host": "0.0.0.0", "allowed_hosts": ["testserver"], **overrides})
    accounts = Accounts.open(chosen)
    try:
        return chosen, tokens.create_token(accounts.db, "alice").token
    finally:
        accounts.db.dispose()


def status_of(settings: Settings, token: str) -> str:
    accounts = Accounts.open(settings)
    try:
        [info] = tokens.list_tokens(accounts.db, "alice")
        return info.status()
    finally:
        accounts.db.dispose()


def auth(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


def test_an_imagineart_token_over_plain_http_is_revoked(settings: Settings) -> None:
    chosen, token = public(settings)
    with TestClient(create_app(chosen)) as client:
        refused = client.post("/v1/images/generations", data=FORM, headers=auth(token))
        assert refused.status_code == 401
        assert refused.json()["error"] == {
            "code": "invalid_token",
            "message": REVOKED,
            "request_id": refused.headers["x-request-id"],
        }
        assert status_of(chosen, token) == "revoked"
        again = client.post("/v1/images/generations", json={"prompt": "a cat"}, headers=auth(token))
        assert again.status_code == 401, "revoked for every dialect, on the very next request"


def test_an_openai_request_over_plain_http_keeps_its_token(settings: Settings) -> None:
    chosen, token = public(settings)
    with TestClient(create_app(chosen)) as client:
        body = {"prompt": "a cat", "size": "64x64", "response_format": "b64_json"}
        assert client.post("/v1/images/generations", json=body, headers=auth(token)).status_code == 200
    assert status_of(chosen, token) == "active"


def test_forwarded_https_is_believed_only_from_a_trusted_proxy(settings: Settings) -> None:
    chosen, token = public(settings, trusted_proxies=["10.0.0.0/8"])
    proxied = auth(token, **{"X-Forwarded-Proto": "https"})
    with TestClient(create_app(chosen), client=("10.1.2.3", 40000)) as behind_proxy:
        response = behind_proxy.post("/v1/images/generations", data=FORM, headers=proxied)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/png"
    assert status_of(chosen, token) == "active"
    with TestClient(create_app(chosen), client=("203.0.113.9", 40000)) as direct:
        claimed = direct.post("/v1/images/generations", data=FORM, headers=proxied)
    assert claimed.status_code == 401 and claimed.json()["error"]["message"] == REVOKED
    assert status_of(chosen, token) == "revoked"


def test_imagineart_on_its_own_prefix_revokes_before_running(settings: Settings) -> None:
    mounts = {"openai": "", "imagineart": "/imagineart"}
    chosen, token = public(settings, mounts=mounts)
    with TestClient(create_app(chosen)) as client:
        listed = client.get("/imagineart/v1/models", headers=auth(token))
    assert listed.status_code == 401 and listed.json()["error"]["message"] == REVOKED
    assert status_of(chosen, token) == "revoked"


def test_the_opt_out_keeps_the_token(settings: Settings) -> None:
    chosen, token = public(settings, plain_http_tokens="allow")
    with TestClient(create_app(chosen)) as client:
        assert client.post("/v1/images/generations", data=FORM, headers=auth(token)).status_code == 200
    assert status_of(chosen, token) == "active"


@pytest.mark.parametrize(
    ("headers", "kept"),
    [
        ({}, True),
        ({"X-Forwarded-For": "203.0.113.9"}, False),
        ({"Forwarded": "for=203.0.113.9"}, False),
    ],
    ids=["direct", "x-forwarded-for", "forwarded"],
)
def test_the_peer_decides_not_the_bind(settings: Settings, headers: dict[str, str], kept: bool) -> None:
    """On a public bind, a request from 127.0.0.1 that no proxy relayed never crossed a network; one a proxy on
    this machine relayed over plain HTTP may have."""
    chosen, token = public(settings, allowed_hosts=["127.0.0.1"])
    with live_server(create_app(chosen), forwarded_allow_ips=chosen.trusted_proxies) as url:
        response = httpx.post(url + "/v1/images/generations", data=FORM, headers=auth(token, **headers), timeout=60)
    if kept:
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/png"
        assert status_of(chosen, token) == "active"
    else:
        assert response.status_code == 401
        assert response.json()["error"] == {
            "code": "invalid_token",
            "message": REVOKED,
            "request_id": response.headers["x-request-id"],
        }
        assert status_of(chosen, token) == "revoked"


def test_a_relayed_request_on_a_loopback_bind_is_judged_too(settings: Settings) -> None:
    chosen, token = public(settings, host="127.0.0.1")
    relayed = auth(token, **{"X-Forwarded-For": "203.0.113.9"})
    with TestClient(create_app(chosen), client=("127.0.0.1", 40000)) as client:
        response = client.post("/v1/images/generations", data=FORM, headers=relayed)
    assert response.status_code == 401 and response.json()["error"]["message"] == REVOKED
    assert status_of(chosen, token) == "revoked"


def test_imagineart_examples_listing_models_follow_the_rule(settings: Settings) -> None:
    """``GET /v1/models`` is shared with OpenAI; ImagineArt's own examples (curl, httpx, fetch) call it with
    their token, and nothing but the official OpenAI SDK's header tells an OpenAI caller apart."""
    chosen, token = public(settings)
    with TestClient(create_app(chosen)) as client:
        sdk = client.get("/v1/models", headers=auth(token, **{"X-Stainless-Lang": "python"}))
        assert sdk.status_code == 200 and status_of(chosen, token) == "active"
        listed = client.get("/v1/models", headers=auth(token))
    assert listed.status_code == 401
    assert listed.json()["error"] == {
        "message": REVOKED,
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_token",
        "request_id": listed.headers["x-request-id"],
    }
    assert status_of(chosen, token) == "revoked"


# --- limner serve --tls-cert -------------------------------------------------------------------


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, trustme.CA, str, Settings]]:
    """``limner serve --tls-cert --tls-key`` on 127.0.0.1 (tests listen on loopback only), over HTTPS."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    data = tmp_path / "data"
    config = tmp_path / "limner.toml"
    config.write_text(
        f'data_dir = "{data}"\ndefault_model = "pattern"\nallowed_hosts = ["127.0.0.1"]\n\n'
        f'[[models]]\nid = "pattern"\nengine = "testpattern"\naliases = {json.dumps(list(DIALECT_DEFAULT_ALIASES))}\n'
    )
    settings = Settings(data_dir=data)
    _, token = public(settings)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path / "server.log"
    env = {**os.environ, "LIMNER_CONFIG": str(config)}
    command = [sys.executable, "-m", "limner.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--tls-cert", str(tmp_path / "server.pem"), "--tls-key", str(tmp_path / "server.key")]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=out)
    url = f"https://127.0.0.1:{port}"
    context = ssl.create_default_context()
    ca.configure_trust(context)
    try:

        def up() -> bool:
            try:
                return httpx.get(url + "/health", verify=context, timeout=1).status_code == 200
            except httpx.HTTPError:
                return process.poll() is not None

        wait_until(up, timeout=60, what="the HTTPS server to start")
        assert process.poll() is None, log.read_text()[-3000:]
        yield url, ca, token, settings
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def test_a_request_that_arrived_over_https_keeps_its_token(settings: Settings) -> None:
    chosen, token = public(settings)
    with TestClient(create_app(chosen), base_url="https://testserver") as client:
        assert client.post("/v1/images/generations", data=FORM, headers=auth(token)).status_code == 200
    assert status_of(chosen, token) == "active"


def test_limner_terminates_tls_itself(
    tls_server: tuple[str, trustme.CA, str, Settings],
) -> None:
    url, ca, token, _ = tls_server
    context = ssl.create_default_context()
    ca.configure_trust(context)
    response = httpx.post(url + "/v1/images/generations", data=FORM, headers=auth(token), verify=context, timeout=60)
    assert response.status_code == 200, response.text
    assert response.content.startswith(b"\x89PNG")
    with pytest.raises(httpx.HTTPError):
        httpx.get(url.replace("https://", "http://") + "/health", timeout=5)  # no plain HTTP on that port
