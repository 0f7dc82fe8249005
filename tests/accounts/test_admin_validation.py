"""Every bad admin input is a 4xx in the admin envelope (never a plain-text 500), and grants too small
to count are refused rather than silently starting to meter at 0."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from limner.accounts import credits, tokens
from limner.accounts.models import to_micros
from limner.accounts.service import Accounts
from limner.app import create_app
from limner.cli import app as cli
from limner.core.errors import InvalidRequest
from limner.settings import Settings
from tests.support.accounts import bearer

ADMIN = "admin-" + "s" * 30


@pytest.fixture
def admin(priced: Settings) -> Iterator[TestClient]:
    app = create_app(priced.with_overrides(admin_token=ADMIN, allowed_hosts=["testserver"]))
    with TestClient(app, base_url="http://testserver/admin", headers=bearer(ADMIN)) as client:
        assert client.post("/consumers", json={"name": "mobile"}).status_code == 201
        yield client


def error(response: Any, status: int) -> tuple[str, str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()["error"]
    return body["code"], body["message"]


@pytest.mark.parametrize(
    ("method", "path", "body", "message"),
    [
        (
            "post",
            "/tokens/%C2%B2/revoke",
            None,
            "Invalid token id or prefix '²': give a numeric id or the token's prefix (lim_...).",
        ),
        (
            "post",
            "/tokens/%00abcdefgh/rotate",
            None,
            "Invalid token id or prefix '\\x00abcdefgh': give a numeric id or the token's prefix (lim_...).",
        ),
        (
            "post",
            "/consumers/mobile/credits",
            b'{"amount": NaN}',
            "Request body is not valid JSON: 'NaN' is not a JSON number.",
        ),
        ("post", "/consumers/mobile/credits", b'{"amount": 1e400}', "Request body has a number out of range: 1e400."),
        (
            "post",
            "/consumers/mobile/credits",
            b'{"amount": 1e13}',
            "Invalid 'amount': Input should be less than or equal to 1000000000000.",
        ),
        (
            "post",
            "/consumers/mobile/credits",
            b'{"amount": 1e-7}',
            "A grant must move at least 0.000001 credits: this one rounds to 0.",
        ),
        (
            "post",
            "/consumers",
            b'{"name": "big", "rpm": ' + b"9" * 30 + b"}",
            "Invalid 'rpm': Input should be less than or equal to 1000000000.",
        ),
        (
            "patch",
            "/consumers/mobile",
            b'{"ipm": 99999999999}',
            "Invalid 'ipm': Input should be less than or equal to 1000000000.",
        ),
        (
            "post",
            "/consumers",
            b'{"name": "\\ud800"}',
            "Request body has a string that is not valid UTF-8: a lone surrogate escape (\\ud800).",
        ),
        ("post", "/consumers", b"[" * 5000 + b"]" * 5000, "Request body nests JSON deeper than 64 levels."),
        ("post", "/consumers", b'{"name": "x"', "Request body is not valid JSON."),
        (
            "post",
            "/tokens",
            b'{"consumer": "mobile", "expires": "99999999999999999999d"}',
            "Invalid duration '99999999999999999999d': longer than any calendar.",
        ),
        (
            "post",
            "/tokens",
            b'{"consumer": "mobile", "expires": "9999-12-31T23:59:59-05:00"}',
            "Invalid expiry '9999-12-31T23:59:59-05:00': past the year 9999.",
        ),
    ],
)
def test_bad_admin_input_is_a_400_in_the_admin_envelope(
    admin: TestClient, method: str, path: str, body: bytes | None, message: str
) -> None:
    response = admin.request(method.upper(), path, content=body, headers={"content-type": "application/json"})
    assert error(response, 400) == ("invalid_request", message)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/tokens/99999999999999999999999/revoke", "No token with id 99999999999."),
        ("/tokens/4242/revoke", "No token with id 4242."),
        ("/consumers/%00x/credits", "No consumer named '\\x00x'."),
    ],
)
def test_ids_and_names_that_cannot_exist_are_404s(admin: TestClient, path: str, message: str) -> None:
    response = admin.post(path, json={"amount": 1})
    assert error(response, 404) == ("unknown_request", message)


def test_usage_since_out_of_range_is_a_400(admin: TestClient) -> None:
    response = admin.get("/usage", params={"since": "99999999999w"})
    assert error(response, 400)[0] == "invalid_request"


def test_an_admin_body_over_the_cap_is_a_413_in_the_admin_envelope(priced: Settings) -> None:
    app = create_app(priced.with_overrides(admin_token=ADMIN, allowed_hosts=["testserver"], max_json_bytes=2048))
    with TestClient(app, base_url="http://testserver/admin", headers=bearer(ADMIN)) as client:
        response = client.post("/consumers", json={"name": "x", "note": "n" * 4000})
    assert error(response, 413) == (
        "payload_too_large",
        "Request body too large: JSON bodies are limited to 2048 bytes.",
    )


def test_a_text_body_is_refused(admin: TestClient) -> None:
    response = admin.post("/consumers", content=b'{"name": "x"}', headers={"content-type": "text/plain"})
    assert error(response, 400) == ("invalid_request", "Unsupported content type 'text/plain': send application/json.")


def test_valid_edge_values_still_work(admin: TestClient) -> None:
    assert admin.post("/consumers/mobile/credits", json={"amount": 0.000001}).json()["balance"] == 0.000001
    assert admin.patch("/consumers/mobile", json={"rpm": 1_000_000_000}).json()["rpm"] == 1_000_000_000
    issued = admin.post("/tokens", json={"consumer": "mobile"}).json()
    assert admin.post(f"/tokens/{issued['id']}/revoke").json()["status"] == "revoked"


def test_a_grant_that_rounds_to_nothing_starts_no_metering(priced: Settings) -> None:
    accounts = Accounts.open(priced)
    try:
        tokens.create_token(accounts.db, "tiny")
        with pytest.raises(InvalidRequest, match="rounds to 0"):
            credits.grant(accounts.db, "tiny", to_micros(1e-7))
        assert credits.balance(accounts.db, "tiny") is None, "still unmetered"
    finally:
        accounts.db.dispose()


def test_credits_show_never_calls_a_charge_unlimited(
    priced: Settings, tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIMNER_DATA_DIR", str(priced.data_dir))
    accounts = Accounts.open(priced)
    try:
        consumer = tokens.create_token(accounts.db, "mobile")
        credits.grant(accounts.db, "mobile", to_micros(5))
        hold = credits.reserve(accounts.db, 1, to_micros(2), model="pattern", request_id="req_1", ttl=60)
        with accounts.db.write() as session:
            credits.commit(session, hold, request_id="req_1")
        assert consumer.consumer == "mobile"
    finally:
        accounts.db.dispose()
    result = CliRunner().invoke(cli, ["credits", "show", "mobile"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "mobile: balance 3"
    charge = next(line for line in lines if " charge " in line)
    reserve = next(line for line in lines if " reserve " in line)
    assert "unlimited" not in result.output
    assert "-> -" in charge and "-> 3" in reserve


def test_cli_grant_refuses_nan_and_dust(priced: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIMNER_DATA_DIR", str(priced.data_dir))
    CliRunner().invoke(cli, ["consumers", "create", "mobile"])
    dust = CliRunner().invoke(cli, ["credits", "grant", "mobile", "0.0000001"])
    assert dust.exit_code == 1 and "rounds to 0" in dust.output
    nan = CliRunner().invoke(cli, ["credits", "grant", "mobile", "nan"])
    assert nan.exit_code == 1 and "credits must be a finite number" in nan.output
