"""The playground in a real browser: a result upscaled 2x by the built-in upscaler, then used as the input
of an outpainting edit that grows it to 16:9 (the built-in model paints the sides, the image stays)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tests.playground.pages import decode, run_and_wait
from tests.support.browser import Tab
from tests.support.waiting import wait_until

Open = Callable[..., Tab]


def test_a_result_is_upscaled_and_outpainted(playground: Open, open_server: str) -> None:
    tab = playground(open_server)
    page = tab.page
    page.fill("#prompt", "a green leaf")
    page.select_option("#size", "256x256")
    page.fill("#steps", "4")
    assert run_and_wait(tab) == "done"
    first = decode(tab.image(".card img"))
    assert first.size == (256, 256)

    page.click(".card button:has-text('Upscale 2x')")
    wait_until(lambda: page.locator(".card").count() == 2, what="the upscaled card")
    upscaled = decode(tab.image(".card:nth-child(2) img"))  # placed after the card it came from
    assert upscaled.size == (512, 512)
    assert "Result 1 upscaled to 512x512." in (page.text_content("#status") or "")

    page.click(".card:nth-child(1) button:has-text('Use as input')")
    page.select_option("#expand", "16:9")
    assert run_and_wait(tab) == "done"
    outpainted = decode(tab.image(".card img"))  # the newest comes first
    assert outpainted.size == (455, 256)
    kept = np.asarray(outpainted.convert("RGB").crop((99, 0, 355, 256)), dtype=np.int16)
    assert np.abs(kept - np.asarray(first.convert("RGB"), dtype=np.int16)).max() <= 2  # the input, as it was
    assert "Expand16:9" in (page.text_content(".card dl") or "").replace("\n", "").replace(" ", "")
    tab.assert_clean()
