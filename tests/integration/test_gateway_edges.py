"""Edges of the HTTP surface: queueing, URL inputs, limits, shutdown, and a real diffusers pipeline."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import torch
from PIL import Image

from limner.app import create_app
from limner.engines.catalog import ModelEntry
from limner.settings import Settings
from tests.conftest import pattern_models
from tests.support.live_server import live_server
from tests.support.sdk import data_of
from tests.support.slow_server import post_slow, slow_app
from tests.support.tiny_diffusers import build_tiny_sd
from tests.support.waiting import until, wait_until


def png(size: tuple[int, int] = (48, 48), color: tuple[int, int, int] = (10, 200, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def test_queue_full_is_a_429_with_retry_after(tmp_path: Path) -> None:
    app, state = slow_app(tmp_path, max_concurrency=1, max_queue=1)

    async def scenario(url: str) -> None:
        busy = [asyncio.create_task(post_slow(url, "holds-slot"))]
        await until(lambda: state("holds-slot") == "running")
        busy.append(asyncio.create_task(post_slow(url, "holds-queue")))
        await until(lambda: state("holds-queue") == "queued")
        refused = await asyncio.gather(post_slow(url), post_slow(url))
        assert [r.status_code for r in refused] == [429, 429], [r.text for r in refused]
        assert int(refused[0].headers["retry-after"]) >= 1
        assert refused[0].json()["error"]["code"] == "rate_limit_exceeded"
        assert "busy" in refused[0].json()["error"]["message"]
        for call in busy:  # hang up: the server cancels both, so it shuts down at once
            call.cancel()
        await asyncio.gather(*busy, return_exceptions=True)
        await until(lambda: state("holds-slot") == state("holds-queue") == "cancelled")

    with live_server(app) as url:
        asyncio.run(scenario(url))


def test_aigne_hub_generation_and_edit_from_limner_own_url(pattern_server: str) -> None:
    url = pattern_server + "/api/images/generations"
    first = httpx.post(
        url, json={"prompt": "A photorealistic image of a cat programming on a laptop", "n": 1, "size": "1024x1024"}
    )
    assert first.status_code == 200, first.text
    body = first.json()
    assert set(body) >= {"created", "data"} and list(body["data"][0]) == ["url", "seed"]
    own = body["data"][0]["url"]
    edited = httpx.post(
        url, json={"prompt": "make it blue", "image": own, "size": "256x256", "response_format": "b64_json"}
    )
    assert edited.status_code == 200, edited.text
    image = Image.open(io.BytesIO(base64.b64decode(edited.json()["data"][0]["b64_json"])))
    assert image.size == (256, 256)
    relative = own[len(pattern_server) :]
    assert httpx.post(url, json={"prompt": "again", "image": relative}).status_code == 200


def test_aigne_hub_dalle3_example(pattern_server: str) -> None:
    response = httpx.post(
        pattern_server + "/api/images/generations",
        json={
            "model": "dall-e-3",
            "prompt": "An oil painting of a futuristic city skyline at sunset, with flying cars",
            "n": 1,
            "size": "1792x1024",
            "quality": "hd",
            "style": "vivid",
            "response_format": "b64_json",
        },
    )
    assert response.status_code == 200, response.text
    assert Image.open(io.BytesIO(base64.b64decode(response.json()["data"][0]["b64_json"]))).size == (1792, 1024)


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "169.254.169.254", "[::1]"])
def test_image_urls_on_private_addresses_are_refused(pattern_server: str, address: str) -> None:
    response = httpx.post(
        pattern_server + "/api/images/generations", json={"prompt": "x", "image": f"http://{address}:9/secret.png"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_image" and error["param"] == "image"
    assert "refusing to fetch" in error["message"]


def test_tampered_own_link_is_an_invalid_image(pattern_server: str) -> None:
    bad = "/media/" + "a" * 64 + ".png?expires=99999999999&signature=nope"
    response = httpx.post(pattern_server + "/api/images/generations", json={"prompt": "x", "image": bad})
    assert response.status_code == 400
    assert "invalid or has expired" in response.json()["error"]["message"]


def test_oversized_upload_is_refused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, models=pattern_models(), max_upload_bytes=2000)
    with live_server(create_app(settings)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.BadRequestError) as caught:
            client.images.edit(image=("big.png", png((200, 200)) + b"\0" * 3000, "image/png"), prompt="x")
    assert "exceeds the 2000-byte limit" in caught.value.message


def test_shutdown_finishes_in_flight_requests(tmp_path: Path) -> None:
    entry = ModelEntry(id="slow", engine="testpattern", options={"delay": 1.0})
    app = create_app(Settings(data_dir=tmp_path, models=[entry], default_model="slow"))
    jobs = app.state.limner.service.jobs
    response: list[httpx.Response] = []
    with live_server(app) as url:
        body = {"model": "slow", "prompt": "x"}
        headers = {"X-Request-Id": "in-flight-1"}
        thread = threading.Thread(
            target=lambda: response.append(
                httpx.post(url + "/v1/images/generations", json=body, headers=headers, timeout=30)
            )
        )
        thread.start()
        wait_until(lambda: getattr(jobs.get("local", "in-flight-1"), "state", None) == "running")
    thread.join()  # leaving the block shut the server down while the request ran
    assert response and response[0].status_code == 200


@pytest.fixture(scope="module")
def tiny_sd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    torch.set_num_threads(1)
    path = build_tiny_sd(tmp_path_factory.mktemp("tiny-sd"))
    models = [
        ModelEntry(
            id="tiny-sd", engine="diffusers", path=path, default_steps=2, default_size=(64, 64), aliases=["dall-e-2"]
        )
    ]
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), models=models)
    with live_server(create_app(settings)) as url:
        yield url


def test_openai_sdk_through_a_real_diffusers_pipeline(tiny_sd_server: str) -> None:
    client = openai.OpenAI(base_url=tiny_sd_server + "/v1", api_key="x", max_retries=0)
    result = client.images.generate(
        model="tiny-sd", prompt="a red apple", n=2, size="64x64", response_format="b64_json", extra_body={"seed": 5}
    )
    images = [Image.open(io.BytesIO(base64.b64decode(item.b64_json or ""))) for item in data_of(result)]
    assert [image.size for image in images] == [(64, 64), (64, 64)]
    again = client.images.generate(
        model="tiny-sd", prompt="a red apple", n=2, size="64x64", response_format="b64_json", extra_body={"seed": 5}
    )
    repeated = [Image.open(io.BytesIO(base64.b64decode(item.b64_json or ""))).tobytes() for item in data_of(again)]
    assert repeated == [image.tobytes() for image in images]
    assert repeated[0] != repeated[1]
    edited = client.images.edit(
        model="tiny-sd",
        image=("in.png", png((64, 64)), "image/png"),
        prompt="blue",
        size="64x64",
        response_format="b64_json",
    )
    assert Image.open(io.BytesIO(base64.b64decode(data_of(edited)[0].b64_json or ""))).size == (64, 64)


def test_access_log_lines_carry_the_request_id_and_no_query(
    pattern_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    from limner.http.context import RequestIdFilter

    caplog.handler.addFilter(RequestIdFilter())

    def access_lines() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "limner.access" and "/health" in r.getMessage()]

    with caplog.at_level(logging.INFO, logger="limner.access"):
        response = httpx.get(pattern_server + "/health?secret=hunter2")
        wait_until(access_lines, what="the access log line")  # written by the server's thread
    lines = access_lines()
    assert lines[-1].getMessage().startswith("GET /health 200 ")
    assert "hunter2" not in caplog.text
    assert response.headers["x-request-id"]


def test_a_client_that_leaves_frees_its_slot(tmp_path: Path) -> None:
    """One slot, no queue: while a request runs, the next is refused; once its client hangs up, the
    work is cancelled and the slot is free again long before the slow job would have finished."""
    app, state = slow_app(tmp_path, max_concurrency=1, max_queue=0)

    async def scenario(url: str) -> None:
        first = asyncio.create_task(post_slow(url, "leaves-1"))
        await until(lambda: state("leaves-1") == "running")
        assert (await post_slow(url)).status_code == 429, "the slot is taken"
        first.cancel()  # the client hangs up
        await asyncio.gather(first, return_exceptions=True)
        await until(lambda: state("leaves-1") == "cancelled", what="the departed client's job to be cancelled")
        second = asyncio.create_task(post_slow(url, "next-in-line"))
        await until(lambda: state("next-in-line") == "running" or second.done(), what="the next request to start")
        assert state("next-in-line") == "running", "the departed client's slot was released"
        second.cancel()
        await asyncio.gather(second, return_exceptions=True)
        await until(lambda: state("next-in-line") == "cancelled")

    with live_server(app) as url:
        asyncio.run(scenario(url))
