"""The admin HTTP API (guarded by the admin token) and the Prometheus metrics endpoint."""

from __future__ import annotations

import httpx
import pytest

from limner.settings import Settings
from tests.accounts.helpers import generate, make_app
from tests.support.accounts import bearer
from tests.support.live_server import live_server
from tests.support.waiting import wait_until

ADMIN = "admin-" + "s" * 30


def test_admin_api_manages_consumers_tokens_credits_and_usage(priced: Settings) -> None:
    app = make_app(priced.with_overrides(admin_token=ADMIN))
    with live_server(app) as url, httpx.Client(base_url=url + "/admin", headers=bearer(ADMIN)) as admin:
        made = admin.post("/consumers", json={"name": "mobile", "rpm": 100})
        assert made.status_code == 201 and made.json()["metered"] is False
        assert admin.post("/consumers", json={"name": "mobile"}).status_code == 400
        issued = admin.post("/tokens", json={"consumer": "mobile", "expires": "90d", "label": "ios"})
        assert issued.status_code == 201
        token = issued.json()["token"]
        assert token.startswith("lim_") and issued.json()["expires_at"]

        listed = admin.get("/tokens").json()["data"]
        assert [t["prefix"] for t in listed] == [token[:12]] and token not in admin.get("/tokens").text

        assert admin.post("/consumers/mobile/credits", json={"amount": 10.5}).json()["balance"] == 10.5
        assert generate(url, token).status_code == 200
        # The charge is committed just after the response is sent (see the accounting gate), so wait for it.
        wait_until(lambda: admin.get("/consumers/mobile/credits").json()["ledger"][0]["kind"] == "charge")
        shown = admin.get("/consumers/mobile/credits").json()
        assert shown["balance"] == 9.5 and [e["kind"] for e in shown["ledger"]] == ["charge", "reserve", "grant"]

        assert admin.patch("/consumers/mobile", json={"ipm": 50}).json()["ipm"] == 50
        rotated = admin.post(f"/tokens/{issued.json()['id']}/rotate", json={}).json()
        assert rotated["rotated_from"] == issued.json()["id"]
        assert generate(url, token).status_code == 200 and generate(url, rotated["token"]).status_code == 200
        assert admin.post(f"/tokens/{token[:12]}/revoke").json()["status"] == "revoked"
        assert generate(url, token).status_code == 401, "revoked through the API: refused at once"
        assert generate(url, rotated["token"]).status_code == 200

        wait_until(lambda: len(admin.get("/usage", params={"consumer": "mobile"}).json()["records"]) == 4)
        used = admin.get("/usage", params={"consumer": "mobile", "since": "1h"}).json()
        assert used["summary"][0]["requests"] == 4 and used["summary"][0]["images"] == 4
        assert {r["token_id"] for r in used["records"]} == {issued.json()["id"], rotated["id"]}
        assert admin.delete("/consumers/mobile/credits").json()["metered"] is False
        assert admin.get("/consumers/nobody").status_code == 404
        assert admin.post("/tokens", json={"consumer": "x", "expires": "yesterday"}).json()["error"]["param"] == (
            "expires"
        )


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "missing_bearer_token"),
        ({"Authorization": "Basic " + ADMIN}, 401, "missing_bearer_token"),
        ({"Authorization": "Bearer wrong"}, 401, "invalid_token"),
        ({"Authorization": "Bearer " + ADMIN[:-1]}, 401, "invalid_token"),
    ],
)
def test_admin_api_requires_the_admin_token(priced: Settings, headers: dict[str, str], status: int, code: str) -> None:
    with live_server(make_app(priced.with_overrides(admin_token=ADMIN))) as url:
        response = httpx.get(url + "/admin/consumers", headers=headers)
    assert response.status_code == status and response.json()["error"]["code"] == code


def test_admin_api_is_off_without_an_admin_token(priced: Settings) -> None:
    with live_server(make_app(priced)) as url:
        response = httpx.get(url + "/admin/consumers", headers=bearer("anything"))
    assert response.status_code == 403 and "LIMNER_ADMIN_TOKEN" in response.json()["error"]["message"]


def test_openapi_declares_the_admin_token_on_every_admin_route(priced: Settings) -> None:
    schema = make_app(priced.with_overrides(admin_token=ADMIN)).openapi()
    assert schema["components"]["securitySchemes"]["AdminToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "The value of LIMNER_ADMIN_TOKEN, as a bearer token.",
    }
    operations = [op for path, item in schema["paths"].items() if path.startswith("/admin") for op in item.values()]
    assert operations and all(op.get("security") == [{"AdminToken": []}] for op in operations)


def test_metrics_expose_requests_latency_images_errors_and_queue_depth(priced: Settings) -> None:
    app = make_app(priced)
    with live_server(app) as url:
        assert generate(url, "unused-while-open", n=2).status_code == 200
        assert generate(url, "unused-while-open", model="broken").status_code == 502
        assert generate(url, "unused-while-open", model="nope").status_code == 404
        httpx.post(url + "/api/images/generations", json={"prompt": "x", "model": "pattern-free"})
        text = httpx.get(url + "/metrics").text
    assert 'limner_http_requests_total{dialect="shared_paths",method="POST",status="200"} 1.0' in text
    assert 'limner_http_requests_total{dialect="aigne",method="POST",status="200"} 1.0' in text
    assert 'limner_http_request_duration_seconds_count{dialect="aigne"} 1.0' in text
    assert 'limner_generations_total{dialect="openai",model="pattern",outcome="ok"} 1.0' in text
    assert 'limner_generations_total{dialect="openai",model="unknown",outcome="model_not_found"} 1.0' in text
    assert 'limner_images_total{dialect="openai",model="pattern"} 2.0' in text
    assert 'limner_errors_total{code="model_error"} 1.0' in text
    assert 'limner_queue_depth{model="pattern"} 0.0' in text
    assert "limner_generation_duration_seconds_bucket" in text


def test_each_app_has_its_own_registry_and_the_metrics_token_guards_it(priced: Settings) -> None:
    first, second = make_app(priced), make_app(priced.with_overrides(metrics_token="m" * 32))
    assert first.state.limner.metrics.registry is not second.state.limner.metrics.registry
    with live_server(second) as url:
        assert httpx.get(url + "/metrics").status_code == 401
        assert httpx.get(url + "/metrics", headers=bearer("m" * 32)).status_code == 200
        assert httpx.get(url + "/limner/models").status_code == 401  # residency: guarded the same way
        assert httpx.get(url + "/limner/models", headers=bearer("m" * 32)).status_code == 200
