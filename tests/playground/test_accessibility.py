"""An accessibility scan of every state of the page with axe-core (a test dependency, injected into the page):
no serious or critical violation at desktop or phone width."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.playground.conftest import Locked
from tests.playground.pages import run_and_wait, two_colours, upload
from tests.support.browser import Tab

Open = Callable[..., Tab]
BLOCKING = {"serious", "critical"}
SCAN = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 5).map((n) => n.target.join(" ")),
  }));
}"""


def violations(tab: Tab, axe_source: str) -> list[dict[str, Any]]:
    if not tab.page.evaluate("typeof axe !== 'undefined'"):
        tab.page.add_script_tag(content=axe_source)
    found: list[dict[str, Any]] = tab.page.evaluate(SCAN)
    return [violation for violation in found if violation["impact"] in BLOCKING]


@pytest.mark.parametrize("viewport", [(1280, 900), (390, 844)], ids=["desktop", "phone"])
def test_no_serious_accessibility_violations_in_any_state(
    playground: Open, locked_playground: Locked, axe_source: str, viewport: tuple[int, int]
) -> None:
    tab = playground(locked_playground.url, token=locked_playground.tokens.valid, axe=True, viewport=viewport)
    page = tab.page
    states: dict[str, list[dict[str, Any]]] = {"loaded": violations(tab, axe_source)}

    page.fill("#prompt", "a red apple")
    page.select_option("#size", "256x256")
    assert run_and_wait(tab) == "done"
    states["with a result"] = violations(tab, axe_source)

    page.check("input[name=mode][value=edit]")
    upload(tab, two_colours())
    page.wait_for_selector("#mask-tools", state="visible")
    states["editing with a mask"] = violations(tab, axe_source)

    page.focus("#mask")  # paint with the keyboard: brush down, two steps down, brush up
    for key in ("Space", "ArrowDown", "ArrowDown", "Space"):
        page.keyboard.press(key)
    page.click("#show-request")
    page.wait_for_selector("#request-dialog[open]")
    assert "download mask.png" in (page.text_content("#request-files") or ""), "the keyboard painted a mask"
    states["showing the request"] = violations(tab, axe_source)
    page.click("#request-close")

    page.click("#access-toggle")
    page.fill("#admin-token", locked_playground.admin)
    page.click("#access-form button[type=submit]")
    page.click(".view-tab[data-view=admin]")
    page.wait_for_selector("#usage-chart svg", state="attached")
    states["admin view"] = violations(tab, axe_source)

    assert {state: found for state, found in states.items() if found} == {}
    tab.assert_clean()
