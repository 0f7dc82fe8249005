"""Edges of the HTTP surface: queueing, URL inputs, limits, shutdown, and a real diffusers pipeline."""

from __future__ import annotations

import base64
import io
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
from tests.support.tiny_diffusers import build_tiny_sd


def png(size: tuple[int, int] = (48, 48), color: tuple[int, int, int] = (10, 200, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def test_queue_full_is_a_429_with_retry_after(pattern_server: str) -> None:
    results: list[httpx.Response] = []

    def call() -> None:
        results.append(
            httpx.post(
                pattern_server + "/v1/images/generations", json={"model": "pattern-slow", "prompt": "x"}, timeout=30
            )
        )

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    refused = [r for r in results if r.status_code == 429]
    assert len(refused) == 2, [r.status_code for r in results]
    assert int(refused[0].headers["retry-after"]) >= 1
    assert refused[0].json()["error"]["code"] == "rate_limit_exceeded"
    assert "busy" in refused[0].json()["error"]["message"]


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
    settings = Settings(data_dir=tmp_path, models=pattern_models())
    response: list[httpx.Response] = []
    with live_server(create_app(settings)) as url:
        thread = threading.Thread(
            target=lambda: response.append(
                httpx.post(url + "/v1/images/generations", json={"model": "pattern-slow", "prompt": "x"}, timeout=30)
            )
        )
        thread.start()
        import time

        time.sleep(0.15)
    thread.join()
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
    images = [Image.open(io.BytesIO(base64.b64decode(item.b64_json or ""))) for item in result.data]
    assert [image.size for image in images] == [(64, 64), (64, 64)]
    again = client.images.generate(
        model="tiny-sd", prompt="a red apple", n=2, size="64x64", response_format="b64_json", extra_body={"seed": 5}
    )
    repeated = [Image.open(io.BytesIO(base64.b64decode(item.b64_json or ""))).tobytes() for item in again.data]
    assert repeated == [image.tobytes() for image in images]
    assert repeated[0] != repeated[1]
    edited = client.images.edit(
        model="tiny-sd",
        image=("in.png", png((64, 64)), "image/png"),
        prompt="blue",
        size="64x64",
        response_format="b64_json",
    )
    assert Image.open(io.BytesIO(base64.b64decode(edited.data[0].b64_json or ""))).size == (64, 64)


def test_access_log_lines_carry_the_request_id_and_no_query(
    pattern_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from limner.http.context import RequestIdFilter

    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.INFO, logger="limner.access"):
        response = httpx.get(pattern_server + "/health?secret=hunter2")
        import time

        time.sleep(0.1)
    lines = [r for r in caplog.records if r.name == "limner.access" and "/health" in r.getMessage()]
    assert lines, "one access line per request"
    assert lines[-1].getMessage().startswith("GET /health 200 ")
    assert "hunter2" not in caplog.text
    assert response.headers["x-request-id"]


def test_a_client_that_leaves_frees_its_slot(tmp_path: Path) -> None:
    """One slot, no queue: while a request runs, the next is refused; once its client hangs up, the
    work is cancelled and the slot is free again well before the slow job would have finished."""
    import time

    slow = ModelEntry(id="slow", engine="testpattern", options={"delay": 5.0}, max_concurrency=1, max_queue=0)
    settings = Settings(data_dir=tmp_path, models=[slow], default_model="slow")
    with live_server(create_app(settings)) as url:
        body = {"model": "slow", "prompt": "x", "response_format": "b64_json"}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url + "/v1/images/generations", json=body, timeout=0.5)
        deadline = time.monotonic() + 3.0
        admitted = False
        while not admitted and time.monotonic() < deadline:
            try:  # refused at once with 429 while the slot is taken; admitted means it runs (and we hang up)
                refused = httpx.post(url + "/v1/images/generations", json={**body, "prompt": "y"}, timeout=0.4)
                assert refused.status_code == 429, refused.text
                time.sleep(0.1)
            except httpx.ReadTimeout:
                admitted = True
    assert admitted, "the departed client's slot was released long before its 5 s job would have ended"
