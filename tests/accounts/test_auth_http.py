"""The auth policy over real HTTP, with the ``openai`` SDK and httpx: open on loopback without tokens,
503 on a public bind without tokens, and every auth error in the OpenAI and AIGNE envelopes."""

from __future__ import annotations

import hmac
import io
import logging
from collections.abc import Iterator
from unittest import mock

import httpx
import openai
import pytest
from PIL import Image

from limner.accounts import tokens
from limner.accounts.service import Accounts
from limner.app import create_app
from limner.settings import Settings
from tests.support.accounts import TestTokens, assert_auth_errors, bearer, locked_server
from tests.support.live_server import live_server
from tests.support.sdk import data_of
from tests.support.waiting import wait_until

OPENAI_CODES = {"missing_bearer_token": "missing_api_key", "invalid_token": "invalid_api_key"}
# Paths OpenAI shares with ImagineArt answer auth errors before a dialect is chosen, in the envelope
# both SDKs read (limner's own codes, OpenAI's fields): see limner.dialects.shared_paths.
SHARED_CODES = {"missing_bearer_token": "missing_bearer_token", "invalid_token": "invalid_token"}


def error_code(response: httpx.Response) -> object:
    return response.json()["error"]["code"]


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 30)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def locked(priced: Settings) -> Iterator[tuple[str, TestTokens]]:
    with locked_server(priced) as server:
        yield server


def test_open_on_loopback_while_no_token_exists(priced: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="limner.accounts")
    with (
        live_server(create_app(priced)) as url,
        openai.OpenAI(base_url=url + "/v1", api_key="anything", max_retries=0) as client,
    ):
        assert data_of(client.images.generate(model="pattern", prompt="x", response_format="b64_json"))[0].b64_json
        assert httpx.post(url + "/api/images/generations", json={"prompt": "x"}).status_code == 200
    assert "no API tokens exist" in caplog.text, "the open state is announced at startup"


def test_public_bind_without_tokens_serves_nobody(priced: Settings) -> None:
    settings = priced.with_overrides(host="0.0.0.0")
    with live_server(create_app(settings)) as url:
        with (
            openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as client,
            pytest.raises(openai.InternalServerError) as caught,
        ):
            client.images.generate(model="pattern", prompt="x")
        assert caught.value.status_code == 503
        assert caught.value.code == "no_tokens_configured"
        for method, path in (
            ("GET", "/v1/models/dall-e-2"),
            ("POST", "/api/images/generations"),
            ("GET", "/v1/models"),
        ):
            response = httpx.request(method, url + path, json={"prompt": "x"})
            assert response.status_code == 503, path
            assert error_code(response) == "no_tokens_configured", path
        assert httpx.get(url + "/health").json() == {"ok": True}


def test_every_auth_error_in_the_openai_envelope(locked: tuple[str, TestTokens]) -> None:
    url, issued = locked
    assert_auth_errors(lambda h: httpx.get(url + "/v1/models/dall-e-2", headers=h), error_code, OPENAI_CODES, issued)
    assert_auth_errors(
        lambda h: httpx.post(
            url + "/v1/images/variations",
            files={"image": ("a.png", png(), "image/png")},
            data={"model": "pattern-free"},
            headers=h,
        ),
        error_code,
        OPENAI_CODES,
        issued,
    )
    missing = httpx.get(url + "/v1/models/dall-e-2").json()["error"]
    assert missing["type"] == "invalid_request_error" and "Authorization: Bearer" in missing["message"]


def test_every_auth_error_in_the_aigne_envelope(locked: tuple[str, TestTokens]) -> None:
    url, issued = locked
    assert_auth_errors(
        lambda h: httpx.post(url + "/api/images/generations", json={"prompt": "x", "model": "pattern-free"}, headers=h),
        error_code,
        OPENAI_CODES,
        issued,
    )


def test_shared_paths_refuse_before_choosing_a_dialect(locked: tuple[str, TestTokens]) -> None:
    url, issued = locked
    assert_auth_errors(lambda h: httpx.get(url + "/v1/models", headers=h), error_code, SHARED_CODES, issued)
    # a JSON body is evidently OpenAI's: its codes, as on every other OpenAI path
    assert_auth_errors(
        lambda h: httpx.post(url + "/v1/images/generations", json={"prompt": "x", "model": "pattern-free"}, headers=h),
        error_code,
        OPENAI_CODES,
        issued,
    )


def test_openai_alone_answers_with_openai_codes(priced: Settings) -> None:
    with locked_server(priced.with_overrides(mounts={"openai": ""})) as (url, issued):
        assert_auth_errors(
            lambda h: httpx.post(
                url + "/v1/images/generations", json={"prompt": "x", "model": "pattern-free"}, headers=h
            ),
            error_code,
            OPENAI_CODES,
            issued,
        )


# The SDK marks images.create_variation deprecated; limner still serves /v1/images/variations, so the test calls it.
@pytest.mark.filterwarnings("ignore:deprecated$:DeprecationWarning")
def test_openai_sdk_sees_authentication_errors(locked: tuple[str, TestTokens]) -> None:
    url, issued = locked
    for key in ("lim_" + "q" * 43, issued.revoked, issued.expired):
        with openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0) as client:
            with pytest.raises(openai.AuthenticationError):
                client.images.generate(model="pattern-free", prompt="x")
            with pytest.raises(openai.AuthenticationError):
                client.models.retrieve("dall-e-2")
            with pytest.raises(openai.AuthenticationError):
                client.images.create_variation(image=("a.png", png(), "image/png"))
    with openai.OpenAI(base_url=url + "/v1", api_key=issued.valid, max_retries=0) as client:
        assert data_of(client.images.generate(model="pattern-free", prompt="x"))[0].url
        assert client.models.retrieve("dall-e-2").id == "dall-e-2"


def test_revoked_token_is_refused_within_a_second_on_another_replica(
    priced: Settings, locked: tuple[str, TestTokens]
) -> None:
    url, _ = locked
    other_process = Accounts.open(priced)  # as the CLI or another replica would: same database, own engine
    try:
        fresh = tokens.create_token(other_process.db, "bob")
        with openai.OpenAI(base_url=url + "/v1", api_key=fresh.token, max_retries=0) as client:
            assert client.images.generate(model="pattern-free", prompt="x").data  # now in the server's cache
            tokens.revoke_token(other_process.db, fresh.prefix)

            def refused() -> openai.AuthenticationError | None:
                try:
                    client.models.retrieve("dall-e-2")
                except openai.AuthenticationError as exc:
                    return exc
                return None

            # the server checks the accounts version once a second (the exact bound: tests/accounts/test_cache.py)
            wait_until(refused, what="the revocation to reach the server")
            with pytest.raises(openai.AuthenticationError) as caught:
                client.images.generate(model="pattern-free", prompt="x")
            assert caught.value.code == "invalid_api_key"  # as on every OpenAI path
    finally:
        other_process.db.dispose()


def test_rotation_overlap_over_http(priced: Settings, locked: tuple[str, TestTokens]) -> None:
    url, issued = locked
    cli = Accounts.open(priced)
    try:
        with cli.db.read() as session:
            old_id = tokens.find_token(session, issued.valid).id
        new = tokens.rotate_token(cli.db, str(old_id))

        def status(token: str) -> int:
            return httpx.get(url + "/v1/models/dall-e-2", headers=bearer(token)).status_code

        assert (status(issued.valid), status(new.token)) == (200, 200), "both work while clients move"
        tokens.revoke_token(cli.db, str(old_id))
        wait_until(lambda: status(issued.valid) == 401, what="the revocation to reach the server")
        assert status(new.token) == 200
    finally:
        cli.db.dispose()


def test_http_verification_compares_in_constant_time(locked: tuple[str, TestTokens]) -> None:
    url, issued = locked
    with mock.patch.object(hmac, "compare_digest", wraps=hmac.compare_digest) as compare:
        assert httpx.get(url + "/v1/models/dall-e-2", headers=bearer(issued.valid)).status_code == 200
        assert httpx.get(url + "/v1/models/dall-e-2", headers=bearer(issued.valid[:-2] + "zz")).status_code == 401
    assert compare.call_count >= 2


def test_health_and_signed_media_stay_open(locked: tuple[str, TestTokens]) -> None:
    url, issued = locked
    assert httpx.get(url + "/health").status_code == 200
    made = httpx.post(
        url + "/api/images/generations", json={"prompt": "x", "model": "pattern-free"}, headers=bearer(issued.valid)
    )
    media = made.json()["data"][0]["url"]
    assert httpx.get(media).status_code == 200, "a signed link works for anyone holding it"


def test_tokens_never_appear_in_logs(priced: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    from tests.support.accounts import issue_tokens

    issued = issue_tokens(priced)
    app = create_app(priced)
    with live_server(app, log_level="info", log_config=None, access_log=True) as url:
        for token in (issued.valid, issued.revoked, issued.expired, issued.valid + "x"):
            httpx.post(
                url + "/api/images/generations", json={"prompt": "x", "model": "pattern-free"}, headers=bearer(token)
            )
            httpx.post(url + "/api/images/generations", json={"prompt": "x", "model": "broken"}, headers=bearer(token))
    assert '"POST /api/images/generations HTTP/1.1" 200' in caplog.text, "access logs were captured"
    for token in (issued.valid, issued.revoked, issued.expired):
        assert token not in caplog.text
        assert token[12:] not in caplog.text


def test_every_dialect_refuses_unauthenticated_callers_before_reading_the_body(priced: Settings) -> None:
    """The route class authenticates every dialect (the other dialects' own envelopes are pinned in
    tests/dialects); a prefixed ImagineArt keeps its health probe open."""
    mounts = {"openai": "", "aigne": "", "aiml": "", "milady": "", "imagineart": "/ia"}
    with locked_server(priced.with_overrides(mounts=mounts)) as (url, issued):
        requests = {
            "aiml": lambda h: httpx.post(
                url + "/v1/generation/images", json={"prompt": "x", "model": "pattern-free"}, headers=h
            ),
            "milady": lambda h: httpx.post(
                url + "/api/v1/generate-image", json={"prompt": "x", "model": "pattern-free"}, headers=h
            ),
            "imagineart models": lambda h: httpx.get(url + "/ia/v1/models", headers=h),
            "imagineart generate": lambda h: httpx.post(
                url + "/ia/v1/images/generations", data={"prompt": "x"}, headers=h
            ),
        }
        for send in requests.values():
            assert_auth_errors(
                send, lambda r: r.status_code, {"missing_bearer_token": 401, "invalid_token": 401}, issued
            )
        imagineart = httpx.get(url + "/ia/v1/models").json()["error"]
        assert imagineart["code"] == "missing_bearer_token" and imagineart["request_id"]
        assert httpx.get(url + "/ia/health").json() == {"ok": True}
