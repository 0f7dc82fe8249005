"""A consumer's scheduling and access settings through the admin API and the CLI, checked and stored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from limner.accounts import consumers
from limner.accounts.service import Accounts
from limner.app import create_app
from limner.cli import app as cli
from limner.settings import Settings
from tests.support.accounts import bearer

ADMIN = "admin-" + "s" * 30


@pytest.fixture
def admin(priced: Settings) -> Iterator[TestClient]:
    app = create_app(priced.with_overrides(admin_token=ADMIN, allowed_hosts=["testserver"]))
    with TestClient(app, base_url="http://testserver/admin", headers=bearer(ADMIN)) as client:
        assert client.post("/consumers", json={"name": "mobile"}).status_code == 201
        yield client


def test_the_admin_api_sets_and_shows_access(admin: TestClient) -> None:
    assert admin.get("/consumers/mobile").json()["access"] == {
        "max_priority": 0,
        "start_deadline": None,
        "models": None,
        "loras": None,
    }
    body = {"max_priority": 7, "start_deadline": 12.5, "models": ["pattern", "pattern"], "loras": []}
    response = admin.put("/consumers/mobile/access", json=body)
    assert response.status_code == 200, response.text
    expected = {"max_priority": 7, "start_deadline": 12.5, "models": ["pattern"], "loras": []}
    assert response.json()["access"] == expected
    assert admin.get("/consumers/mobile").json()["access"] == expected


@pytest.mark.parametrize(
    ("body", "field"),
    [({"max_priority": 101}, "max_priority"), ({"start_deadline": 0}, "start_deadline"), ({"models": "x"}, "models")],
)
def test_bad_access_settings_are_400s_naming_the_field(admin: TestClient, body: dict[str, object], field: str) -> None:
    response = admin.put("/consumers/mobile/access", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_request", field) and f"Invalid '{field}'" in error["message"]


def test_access_of_an_unknown_consumer_is_a_404(admin: TestClient) -> None:
    response = admin.put("/consumers/nobody/access", json={})
    assert response.status_code == 404 and "nobody" in response.json()["error"]["message"]


def test_the_cli_sets_access(priced: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LIMNER_CONFIG", "/nonexistent/limner.toml")
    monkeypatch.setenv("LIMNER_DATA_DIR", str(priced.data_dir))
    runner = CliRunner()
    assert runner.invoke(cli, ["consumers", "create", "kiosk"]).exit_code == 0
    result = runner.invoke(
        cli, ["consumers", "access", "kiosk", "--max-priority", "3", "--start-deadline", "20", "--models", "a, b"]
    )
    assert result.exit_code == 0, result.output
    assert "kiosk: max priority 3, start deadline 20 s, models a, b, LoRAs all" in result.output
    accounts = Accounts.open(priced)
    try:
        policy = consumers.policy(accounts.db, "kiosk")
    finally:
        accounts.db.dispose()
    assert policy.access == consumers.Access(3, 20.0, ("a", "b"), None)
    refused = runner.invoke(cli, ["consumers", "access", "kiosk", "--max-priority", "500"])
    assert refused.exit_code != 0 and "max_priority must be between 0 and 100" in refused.output
