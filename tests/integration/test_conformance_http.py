"""What a client of each real service recognises, over real HTTP on 127.0.0.1, where the answer depends on
accounts: the invalid-key code of every OpenAI path, and spent credits in the ImagineArt dialect."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest
from PIL import Image

from limner.accounts import credits, tokens
from limner.accounts.models import to_micros
from limner.accounts.service import Accounts
from limner.app import create_app
from limner.config.defaults import DIALECT_DEFAULT_ALIASES
from limner.engines.catalog import ModelEntry
from limner.settings import Settings
from tests.support.accounts import TestTokens, bearer, locked_server
from tests.support.live_server import live_server


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 10)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def locked(settings: Settings) -> Iterator[tuple[str, TestTokens]]:
    with locked_server(settings) as served:
        yield served


# The SDK marks images.create_variation deprecated; limner still serves /v1/images/variations.
@pytest.mark.filterwarnings("ignore:deprecated$:DeprecationWarning")
def test_a_wrong_key_is_invalid_api_key_on_every_openai_path(locked: tuple[str, TestTokens]) -> None:
    url, issued = locked
    image = ("in.png", png(), "image/png")
    with openai.OpenAI(base_url=url + "/v1", api_key="sk-not-a-limner-key", max_retries=0) as sdk:
        calls: dict[str, Callable[[], object]] = {
            "generate": lambda: sdk.images.generate(model="gpt-image-2", prompt="x"),
            "edit": lambda: sdk.images.edit(model="gpt-image-2", image=image, prompt="x"),
            "variation": lambda: sdk.images.create_variation(image=image),
            "models.list": lambda: sdk.models.list(),
            "models.retrieve": lambda: sdk.models.retrieve("dall-e-2"),
        }
        for name, call in calls.items():
            with pytest.raises(openai.AuthenticationError) as caught:
                call()
            assert (caught.value.code, caught.value.type) == ("invalid_api_key", "invalid_request_error"), name
    with openai.OpenAI(base_url=url + "/v1", api_key=issued.valid, max_retries=0) as sdk:
        assert sdk.models.retrieve("dall-e-2").id == "dall-e-2"
    # Without the SDK's headers: a JSON body is evidently OpenAI's; a form on a shared path is ImagineArt's.
    raw = httpx.post(url + "/v1/images/generations", json={"prompt": "x"}, headers=bearer("sk-nope"))
    assert raw.json()["error"]["code"] == "invalid_api_key"
    form = httpx.post(url + "/v1/images/generations", data={"prompt": "x"}, headers=bearer("sk-nope"))
    assert form.status_code == 401 and form.json()["error"]["code"] == "invalid_token"


def test_spent_imagineart_credits_are_not_a_retryable_429(settings: Settings) -> None:
    """A client that retries 429s (most do) would loop forever on a balance nothing will refill."""
    priced = settings.with_overrides(
        models=[
            ModelEntry(id="pattern", engine="testpattern", aliases=list(DIALECT_DEFAULT_ALIASES), price_per_image=1)
        ]
    )
    accounts = Accounts.open(priced)
    try:
        token = tokens.create_token(accounts.db, "alice").token
        credits.grant(accounts.db, "alice", to_micros(0.5))
    finally:
        accounts.db.dispose()
    with live_server(create_app(priced)) as url:
        transport = httpx.HTTPTransport(retries=0)
        with httpx.Client(base_url=url + "/v1", headers=bearer(token), transport=transport) as client:
            generation = client.post("/images/generations", data={"prompt": "a chef", "resolution": "1K"})
            edit = client.post("/images/edits", data={"prompt": "x"}, files=[("images", ("a.png", png(), "image/png"))])
    for response in (generation, edit):
        assert response.status_code == 401, response.text
        assert "retry-after" not in response.headers
        error = response.json()["error"]
        assert set(error) == {"code", "message", "request_id"} and error["code"] == "invalid_token"
        assert "credits" in error["message"].lower()
