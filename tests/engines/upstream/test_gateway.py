"""limner in front of the fake providers, over real HTTP: every dialect sees upstream failures in its
own envelope, the credential never comes back out, and a client that leaves cancels the upstream call."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from limner.app import create_app
from limner.settings import Settings
from tests.engines.upstream.conftest import Fake
from tests.engines.upstream.fakes.common import KEY
from tests.support.live_server import live_server
from tests.support.waiting import until


@pytest.fixture
def gateway(fakes: dict[str, Fake], tmp_path: Path) -> Iterator[str]:
    models = [
        fakes["openai"].entry(id="gw-openai", timeout=1.0),
        fakes["gemini"].entry(id="gw-gemini", aliases=["google/gemini-2.5-flash-image"]),
        fakes["aigne"].entry(id="gw-hub", fallbacks=["gw-gemini"]),
    ]
    settings = Settings(data_dir=tmp_path / "gateway", models=models, default_model="gw-openai")
    with live_server(create_app(settings)) as url:
        yield url


def generate(url: str, model: str, **extra: object) -> httpx.Response:
    body = {"model": model, "prompt": "a lighthouse at dusk", "size": "1024x1024", **extra}
    return httpx.post(url + "/v1/images/generations", json=body, timeout=30)


def test_images_come_back_as_the_gateway_own_links(gateway: str, fakes: dict[str, Fake]) -> None:
    response = generate(gateway, "gw-openai", n=2, response_format="url")
    assert response.status_code == 200, response.text
    urls = [item["url"] for item in response.json()["data"]]
    assert len(urls) == 2 and all(url.startswith(gateway + "/media/") for url in urls)
    image = Image.open(io.BytesIO(httpx.get(urls[0]).content))
    assert image.size == (1024, 1024)  # the provider's 64x64, scaled to what was asked
    assert fakes["openai"].control.posts()[0].body["model"] == "dall-e-2"


def test_gemini_text_reaches_milady_clients(gateway: str) -> None:
    body = {"prompt": "a lighthouse", "model": "google/gemini-2.5-flash-image", "aspectRatio": "16:9"}
    response = httpx.post(gateway + "/api/v1/generate-image", json=body, timeout=30)
    assert response.status_code == 200, response.text
    (item,) = response.json()["images"]
    assert item["text"] == "Here is your image (0 inputs)."
    assert item["url"].startswith(gateway + "/media/")


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("reject", 502, "model_auth_error"),
        ("unknown", 502, "model_not_available"),
        ("fail", 502, "model_error"),
        ("echo", 502, "model_error"),
        ("garbage", 502, "model_error"),
        ("stall", 504, "timeout"),
        ("throttle", 429, "rate_limit_exceeded"),
    ],
)
def test_upstream_failures_in_the_openai_envelope_without_the_key(
    gateway: str, fakes: dict[str, Fake], caplog: pytest.LogCaptureFixture, fault: str, status: int, code: str
) -> None:
    fakes["openai"].control.set(fault, stall_seconds=3.0)
    with caplog.at_level(logging.DEBUG):
        response = generate(gateway, "gw-openai")
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    if status == 429:
        assert int(response.headers["retry-after"]) >= 1
    assert "upstream openai model=gw-openai outcome=error" in caplog.text  # the gateway's logs were captured
    for text in (response.text, caplog.text):
        assert KEY not in text and KEY[-12:] not in text


def test_upstream_failures_in_the_milady_envelope(gateway: str, fakes: dict[str, Fake]) -> None:
    fakes["gemini"].control.set("reject")
    body = {"prompt": "a lighthouse", "model": "google/gemini-2.5-flash-image"}
    response = httpx.post(gateway + "/api/v1/generate-image", json=body, timeout=30)
    assert response.status_code == 500
    assert response.json()["code"] == "model_auth_error"
    assert response.json()["error"].startswith("Generation failed: Provider 'gemini' rejected")
    assert KEY not in response.text


def test_fallback_answers_when_the_hub_fails(gateway: str, fakes: dict[str, Fake]) -> None:
    fakes["aigne"].control.set("fail")
    response = generate(gateway, "gw-hub", response_format="b64_json")
    assert response.status_code == 200, response.text
    assert len(fakes["aigne"].control.posts()) == 3 and len(fakes["gemini"].control.posts()) == 1


def test_a_client_that_leaves_cancels_the_upstream_request(gateway: str, fakes: dict[str, Fake]) -> None:
    fake = fakes["gemini"]
    fake.control.set("stall", stall_seconds=60.0)

    async def leave_once_the_provider_has_it() -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            body = {"model": "gw-gemini", "prompt": "x"}
            call = asyncio.create_task(client.post(gateway + "/v1/images/generations", json=body))
            await until(lambda: len(fake.control.posts()) == 1, what="the upstream request")
            call.cancel()  # the client hangs up while the provider is still working
            with pytest.raises(asyncio.CancelledError):
                await call
        await until(lambda: fake.control.aborted == 1, what="the upstream request's cancellation")

    asyncio.run(leave_once_the_provider_has_it())
    assert len(fake.control.posts()) == 1


def test_pass_through_urls_hand_out_the_provider_link_and_store_nothing(fakes: dict[str, Fake], tmp_path: Path) -> None:
    entry = fakes["openai"].entry(id="passing", pass_through_urls=True, options={"response_format": "url"})
    settings = Settings(data_dir=tmp_path / "pt", models=[entry], default_model="passing")
    with live_server(create_app(settings)) as url:
        passed = generate(url, "passing", size="256x256")
    assert passed.status_code == 200, passed.text
    link = passed.json()["data"][0]["url"]
    assert link.startswith(fakes["openai"].root) and "/files/" in link
    assert not [p for p in (tmp_path / "pt" / "media").rglob("*.png")]
    image = Image.open(io.BytesIO(httpx.get(link).content))
    assert image.format == "PNG"


def test_pass_through_never_applies_where_the_dialect_needs_stored_media(
    fakes: dict[str, Fake], tmp_path: Path
) -> None:
    entry = fakes["openai"].entry(
        id="passing", pass_through_urls=True, options={"response_format": "url"}, aliases=["image-gen.pro-1.0"]
    )
    settings = Settings(data_dir=tmp_path / "pt", models=[entry], default_model="passing")
    with live_server(create_app(settings)) as url:
        response = httpx.post(
            url + "/v1/generation/images", json={"model": "image-gen.pro-1.0", "prompt": "x", "size": "1K"}, timeout=30
        )
        assert response.status_code == 200, response.text
        backend = response.json()["data"]["image"]["url"]
        resolved = httpx.get(url + backend).json()["url"]
        assert resolved.startswith(url + "/media/")
    assert [p for p in (tmp_path / "pt" / "media").rglob("*.png")]


@pytest.fixture
def typed_gateway(fakes: dict[str, Fake], tmp_path: Path) -> Iterator[str]:
    models = [
        fakes["openai"].entry(id="gw-gpt-image", upstream_model="gpt-image-1"),
        fakes["openai"].entry(id="gw-dall-e-3", upstream_model="dall-e-3"),
    ]
    settings = Settings(data_dir=tmp_path / "typed", models=models, default_model="gw-gpt-image")
    with live_server(create_app(settings)) as url:
        yield url


def test_background_quality_and_style_reach_the_openai_provider(typed_gateway: str, fakes: dict[str, Fake]) -> None:
    """Fields two layers read travel as typed fields: none is dropped on the way to the provider."""
    posts = fakes["openai"].control.posts
    response = generate(typed_gateway, "gw-gpt-image", background="transparent", quality="low")
    assert response.status_code == 200, response.text
    assert (posts()[-1].body["background"], posts()[-1].body["quality"]) == ("transparent", "low")

    response = generate(typed_gateway, "gw-dall-e-3", quality="hd", style="natural", size="1792x1024")
    assert response.status_code == 200, response.text
    assert (posts()[-1].body["quality"], posts()[-1].body["style"]) == ("hd", "natural")

    png = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(png, "PNG")
    response = httpx.post(
        typed_gateway + "/v1/images/edits",
        data={"model": "gw-gpt-image", "prompt": "make it blue", "quality": "medium"},
        files={"image": ("red.png", png.getvalue(), "image/png")},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert posts()[-1].path == "/v1/images/edits" and posts()[-1].body["quality"] == "medium"
