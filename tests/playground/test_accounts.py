"""Tokens and accounts in the playground: refusals in words, and the admin view doing what the admin API does."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.playground.conftest import Locked
from tests.playground.pages import error_text, run_and_wait, save_tokens
from tests.support.accounts import bearer
from tests.support.browser import Tab

Open = Callable[..., Tab]


def issue(locked: Locked, consumer: str, **fields: object) -> str:
    """A token for ``consumer`` made through the admin API (``fields``: rpm, ipm, ...)."""
    with locked.admin_client() as admin:
        answer = admin.post("/admin/tokens", json={"consumer": consumer, **fields})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["token"])


def test_token_refusals_are_explained_in_words(playground: Open, locked_playground: Locked) -> None:
    tab = playground(locked_playground.url)
    page = tab.page
    assert page.get_attribute("body", "data-models") == "failed"
    assert error_text(tab) == (
        "The server did not accept your token (401): Missing bearer token: send the header "
        "'Authorization: Bearer <token>'. Open \"Token\" at the top and enter a valid API token."
    )
    save_tokens(tab, api="lim_" + "w" * 43)
    assert error_text(tab).startswith("The server did not accept your token (401): Invalid API token.")
    assert page.text_content("#access-toggle") == "Token: set"
    assert page.evaluate("localStorage.getItem('limner.token')") == "lim_" + "w" * 43
    assert all("lim_" not in url for url in tab.requested), "tokens never travel in URLs"

    save_tokens(tab, api=locked_playground.tokens.valid)
    assert error_text(tab) == ""
    page.fill("#prompt", "a red apple")
    page.select_option("#size", "256x256")
    assert run_and_wait(tab) == "done"

    broke = issue(locked_playground, "dave")
    with locked_playground.admin_client() as admin:
        assert admin.post("/admin/consumers/dave/credits", json={"amount": 0.5}).status_code == 200
    save_tokens(tab, api=broke)
    assert run_and_wait(tab) == "failed"
    assert error_text(tab).startswith("Out of credits (429): ")
    assert error_text(tab).endswith("Ask an administrator to grant credits.")

    save_tokens(tab, api=issue(locked_playground, "erin", rpm=1))
    assert run_and_wait(tab) == "done"
    assert run_and_wait(tab) == "failed"
    assert error_text(tab).startswith("Too many requests (429): ")
    assert "Try again in " in error_text(tab)
    tab.assert_clean(http_errors_expected=True)


def row_of(tab: Tab, table: str, text: str) -> str:
    return tab.page.locator(f"#{table} tbody tr", has_text=text).first.inner_text()


def test_the_admin_view_lists_issues_revokes_rotates_and_charts(playground: Open, locked_playground: Locked) -> None:
    alice = locked_playground.tokens.valid
    with httpx.Client(base_url=locked_playground.url, headers=bearer(alice)) as client:
        for _ in range(2):
            assert client.post("/v1/images/generations", json={"prompt": "a red apple"}).status_code == 200

    tab = playground(locked_playground.url, token=alice)
    page = tab.page
    assert page.is_hidden(".view-tab[data-view=admin]"), "no admin token, no admin view"
    save_tokens(tab, api=alice, admin="wrong")
    assert page.is_hidden(".view-tab[data-view=admin]")
    save_tokens(tab, api=alice, admin=locked_playground.admin)
    page.wait_for_selector(".view-tab[data-view=admin]", state="visible")
    page.click(".view-tab[data-view=admin]")
    page.wait_for_selector("#consumers tbody tr", state="attached")
    assert page.is_hidden("#view-work")
    assert "alice" in row_of(tab, "consumers", "alice")

    page.wait_for_selector("#usage-chart svg rect", state="attached")
    assert "alice / pattern" in (page.text_content("#usage-chart .legend") or "")
    assert page.locator("#usage-summary tbody tr", has_text="alice").count() == 1

    page.fill("#new-consumer", "carol")
    page.fill("#new-label", "laptop")
    page.click("#token-form button[type=submit]")
    page.wait_for_selector("#new-secret", state="visible")
    secret = page.text_content("#new-secret-value") or ""
    assert secret.startswith("lim_")
    models = httpx.get(f"{locked_playground.url}/v1/models", headers=bearer(secret))
    assert models.status_code == 200, "the new token works"
    page.wait_for_selector("#tokens tbody tr:has-text('laptop')", state="attached")
    assert "active" in row_of(tab, "tokens", "laptop")

    page.locator("#tokens tbody tr", has_text="laptop").get_by_role("button", name="Rotate").click()
    page.wait_for_function(f"() => document.querySelector('#new-secret-value').textContent !== {secret!r}")
    rotated = page.text_content("#new-secret-value") or ""
    assert httpx.get(f"{locked_playground.url}/v1/models", headers=bearer(rotated)).status_code == 200

    original = page.locator("#tokens tbody tr", has_text=secret[:12])  # the listing shows each token's prefix
    original.get_by_role("button", name="Revoke").click()
    page.wait_for_selector(f"#tokens tbody tr:has-text('{secret[:12]}'):has-text('revoked')", state="attached")
    assert page.locator("#tokens tbody tr", has_text=rotated[:12]).get_by_role("button", name="Revoke").count() == 1
    assert httpx.get(f"{locked_playground.url}/v1/models", headers=bearer(secret)).status_code == 401

    page.fill("#grant-consumer", "carol")
    page.fill("#grant-amount", "5")
    page.click("#grant-form button[type=submit]")
    page.wait_for_selector("#consumers tbody tr:has-text('carol'):has-text('5')", state="attached")
    with locked_playground.admin_client() as admin:
        assert admin.get("/admin/consumers/carol/credits").json()["balance"] == 5
    tab.assert_clean(http_errors_expected=True)  # the wrong admin token's 401
