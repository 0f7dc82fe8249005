"""Driving the playground page the way a person does, for the browser tests."""

from __future__ import annotations

import io
import json
import re
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from tests.support.browser import Tab, watch

if TYPE_CHECKING:
    from playwright.sync_api import Browser

WAIT_MS = 60_000
"""A safety net for one generation on a busy machine, never what a test measures."""


def open_playground(
    browser: Browser, url: str, *, viewport: tuple[int, int] = (1280, 900), axe: bool = False, token: str = ""
) -> Tab:
    """The page at ``url``'s root, once its model list has loaded (or failed to); ``token``: as if the
    person had saved it on an earlier visit."""
    tab = watch(browser, viewport=viewport, bypass_csp=axe)  # axe is injected as an inline script
    if token:
        tab.page.context.add_init_script(f"localStorage.setItem('limner.token', {json.dumps(token)})")
    tab.page.goto(url + "/")
    models_settled(tab)
    return tab


def models_settled(tab: Tab) -> str:
    """Wait until the model list loaded or failed; which."""
    tab.page.wait_for_selector("body[data-models=ready], body[data-models=failed]", state="attached", timeout=WAIT_MS)
    return tab.page.get_attribute("body", "data-models") or ""


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB")


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def upload(tab: Tab, image: Image.Image, name: str = "input.png") -> None:
    """Choose an image file in the Edit section, as from a file dialog."""
    from playwright.sync_api import FilePayload

    tab.page.set_input_files("#files", files=[FilePayload(name=name, mimeType="image/png", buffer=png(image))])


def two_colours(size: int = 256) -> Image.Image:
    """Green left half, blue right half."""
    pixels = np.zeros((size, size, 3), dtype=np.uint8)
    pixels[:, : size // 2] = (40, 170, 60)
    pixels[:, size // 2 :] = (40, 60, 210)
    return Image.fromarray(pixels)


def set_range(tab: Tab, selector: str, value: float) -> None:
    """Move a slider as a person would (the page listens for ``input``)."""
    tab.page.eval_on_selector(
        selector, "(el, v) => { el.value = String(v); el.dispatchEvent(new Event('input', {bubbles: true})); }", value
    )


def run_and_wait(tab: Tab, *, keyboard: bool = False) -> str:
    """Start the request (the button, or Ctrl+Enter in the prompt) and wait for it to end; its final state."""
    done = tab.page.locator("#progress")
    before = tab.page.locator(".card").count()
    if keyboard:
        tab.page.focus("#prompt")
        tab.page.keyboard.press("Control+Enter")
    else:
        tab.page.click("#go")
    tab.page.wait_for_function(
        "n => !document.querySelector('#go').disabled && "
        "(document.querySelectorAll('.card').length > n || document.querySelector('#error').textContent)",
        arg=before,
        timeout=WAIT_MS,
    )
    return done.get_attribute("data-state") or ""


def error_text(tab: Tab) -> str:
    return re.sub(r"\s+", " ", tab.page.text_content("#error") or "").strip()


def save_tokens(tab: Tab, *, api: str = "", admin: str = "") -> None:
    """Type tokens into the Token panel and save them, as a person would."""
    if tab.page.is_hidden("#access"):
        tab.page.click("#access-toggle")
    tab.page.fill("#token", api)
    tab.page.fill("#admin-token", admin)
    tab.page.evaluate("delete document.body.dataset.models")  # so the wait below sees this load's outcome
    tab.page.click("#access-form button[type=submit]")
    models_settled(tab)
