"""Each result in the playground shows its Content Credentials, read by the server with the C2PA library:
who signed it and when, the actions, the AI-generated source type, the model and the ingredients; and the
reader endpoint answers bad input in the playground's envelope."""

from __future__ import annotations

import base64
import io
import re
import struct
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from PIL import Image

from limner.config.defaults import BUILTIN_MODEL_ID
from limner.settings import Settings
from tests.playground.pages import WAIT_MS, run_and_wait
from tests.support.accounts import bearer, locked_server
from tests.support.browser import Tab

Open = Callable[..., Tab]


def credentials_of(tab: Tab, card: str) -> dict[str, str]:
    """The credentials a result card shows, opened as a person would, as {row: text}."""
    details = f"{card} details.credentials"
    tab.page.wait_for_selector(f"{details}:not([data-credentials=loading])", state="attached", timeout=WAIT_MS)
    tab.page.click(f"{details} summary")
    rows = tab.page.eval_on_selector_all(
        f"{details} dt", "dts => dts.map(dt => [dt.textContent, dt.nextElementSibling.textContent])"
    )
    return {"state": tab.page.get_attribute(details, "data-credentials") or "", **dict(rows)}


def test_a_result_shows_who_made_it_and_an_edit_names_its_input(playground: Open, open_server: str) -> None:
    tab = playground(open_server)
    page = tab.page
    page.fill("#prompt", "a red apple")
    page.select_option("#size", "256x256")
    page.fill("#steps", "4")
    before = datetime.now(UTC)
    assert run_and_wait(tab) == "done"
    made = credentials_of(tab, ".card")
    assert made["state"] == "valid", made
    assert made["State"] == "signature and image intact; the signer is on no trust list"
    assert made["Signed by"] == "limner development certificate (untrusted): limner development signer"
    assert made["Actions"] == "c2pa.created"
    assert made["Source"] == "trainedAlgorithmicMedia (made by an AI model)"
    assert made["Model"] == BUILTIN_MODEL_ID and re.fullmatch(r"limner/\d+\.\d+\.\d+\S*", made["Made with"])
    assert made["Ingredients"] == "none"
    shown = page.eval_on_selector(".card details.credentials", "d => d.open")
    assert shown, "the summary opens the details"
    assert made["When"] != "not recorded" and str(before.year) in made["When"]

    page.click(".card button:has-text('Use as input')")
    page.fill("#prompt", "make it green")
    assert run_and_wait(tab) == "done"
    edited = credentials_of(tab, ".card:first-child")  # the newest comes first
    assert edited["state"] == "valid", edited
    assert edited["Actions"] == "c2pa.opened, c2pa.edited"
    assert edited["Ingredients"] == "image"  # the result it was made from, its own manifest kept inside
    assert edited["Source"] == "trainedAlgorithmicMedia (made by an AI model)"
    tab.assert_clean()


def png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_the_reader_answers_what_it_is_sent(settings: Settings) -> None:
    with locked_server(settings) as (url, tokens), httpx.Client(base_url=url, timeout=60) as client:
        refused = client.post("/playground/credentials", json={"image": png(Image.new("RGB", (8, 8)))})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "missing_bearer_token"
        auth = bearer(tokens.valid)

        def read(body: object) -> httpx.Response:
            return client.post("/playground/credentials", json=body, headers=auth)

        # a PNG whose caBX chunk holds 9 MiB (the size is read from the chunk header, never parsed)
        big = bytearray(base64.b64decode(png(Image.new("RGB", (8, 8)))))
        store = b"\0" * (9 << 20)
        big[33:33] = struct.pack(">I", len(store)) + b"caBX" + store + struct.pack(">I", zlib.crc32(b"caBX" + store))
        heavy = base64.b64encode(bytes(big)).decode()
        plain = read({"image": png(Image.new("RGB", (8, 8)))})
        assert plain.status_code == 200 and plain.json()["present"] is False
        cases: list[tuple[dict[str, Any], str]] = [
            ({"image": "not base64!"}, "'image' is not base64: send the image's bytes in base64."),
            ({"image": base64.b64encode(b"GIF89a....").decode()}, "'image' is not a PNG, JPEG or WebP image."),
            (
                {"image": heavy},
                "'image' carries 9216 KB of Content Credentials, more than the 8192 KB this reader reads.",
            ),
            ({}, "Missing required parameter: 'image'."),
            ({"image": "", "extra": 1}, "Unrecognized request argument supplied: 'extra'."),
        ]
        for body, message in cases:
            answer = read(body)
            assert answer.status_code == 400, answer.text
            error = answer.json()["error"]
            assert error["code"] == "invalid_request" and error["message"] == message, error
            assert error["param"] == ("extra" if "extra" in body else "image")
