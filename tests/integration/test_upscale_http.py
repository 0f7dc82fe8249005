"""``/v1/images/upscale`` over real HTTP like every image POST: charged and metered at its upscaler's price,
``Prefer: respond-async`` as a job, ``Idempotency-Key`` replayed and charged once, an image by http(s) URL;
and ``upscale`` on generations through the official ``openai`` SDK."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from PIL import Image

from limner.accounts.models import to_micros
from limner.engines.catalog import ModelEntry
from tests.support.durable import (
    PRICE,
    START_BALANCE,
    Server,
    b64_image,
    base_settings,
    durable_models,
    durable_server,
    durable_settings,
)
from tests.support.file_server import file_server
from tests.support.tiny_upscalers import write_upscaler
from tests.support.waiting import wait_until

UPSCALE_PRICE = 2.5
URL = "/v1/images/upscale"


def png(size: tuple[int, int]) -> bytes:
    image = Image.new("RGB", size, (200, 40, 40))
    image.paste((40, 40, 200), (size[0] // 2, 0, size[0], size[1]))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


SOURCE = png((24, 16))


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("upscale")
    upscaler = ModelEntry(
        id="esrgan", engine="upscaler", path=write_upscaler(root / "x4.pth", scale=4), price_per_image=UPSCALE_PRICE
    )
    settings = durable_settings(base_settings(root / "data"), fetch_allow_private=True)
    settings = settings.with_overrides(models=[*durable_models(), upscaler])
    with durable_server(settings) as running:
        yield running


@pytest.fixture
def server(shared: Server) -> Server:
    shared.reset()
    return shared


def b64(server: Server, **fields: object) -> dict[str, object]:
    return {"image": base64.b64encode(SOURCE).decode(), "model": "esrgan", "response_format": "b64_json", **fields}


def test_an_upscale_is_charged_at_its_upscalers_price_and_metered(server: Server) -> None:
    response = server.post(URL, token=server.alice, json=b64(server, scale=4))
    assert response.status_code == 200, response.text[:300]
    assert b64_image(response.json()["data"][0]["b64_json"]).size == (96, 64)
    wait_until(lambda: server.usage("alice"))  # committed once the response went out: just after it arrived
    rows = server.usage("alice")
    charged = to_micros(UPSCALE_PRICE)
    assert [(row.model, row.status, row.images, row.cost) for row in rows] == [("esrgan", 200, 1, charged)]
    assert server.balance("alice") == START_BALANCE - UPSCALE_PRICE
    assert server.engine.requests == []  # no generating model ran


def test_an_image_by_url(server: Server) -> None:
    with file_server({"/in.png": (SOURCE, "image/png")}) as base:
        response = server.post(URL, token=server.alice, json=b64(server, image=base + "/in.png", scale=2))
    assert response.status_code == 200, response.text[:300]
    assert b64_image(response.json()["data"][0]["b64_json"]).size == (48, 32)


def test_an_async_upscale_runs_as_a_job(server: Server) -> None:
    accepted = server.post(URL, token=server.alice, headers={"Prefer": "respond-async"}, json=b64(server, scale=2))
    assert accepted.status_code == 202, accepted.text[:300]
    done = server.wait_job(accepted.json()["id"], server.alice)
    assert (done["status"], done["result_status"]) == ("done", 200), done
    assert b64_image(done["result"]["data"][0]["b64_json"]).size == (48, 32)
    assert server.balance("alice") == START_BALANCE - UPSCALE_PRICE


def test_an_invalid_async_upscale_is_refused_before_it_is_accepted(server: Server) -> None:
    refused = server.post(URL, token=server.alice, headers={"Prefer": "respond-async"}, json=b64(server, scale=3))
    assert refused.status_code == 400, refused.text[:300]
    assert refused.json()["error"]["param"] == "scale"
    assert server.balance("alice") == START_BALANCE


def test_a_retry_with_the_same_key_replays_and_is_charged_once(server: Server) -> None:
    headers = {"Idempotency-Key": server.key("upscale")}
    first = server.post(URL, token=server.alice, headers=headers, json=b64(server, scale=2))
    again = server.post(URL, token=server.alice, headers=headers, json=b64(server, scale=2))
    assert (first.status_code, again.status_code) == (200, 200), again.text[:300]
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert server.balance("alice") == START_BALANCE - UPSCALE_PRICE


def test_without_credits_for_it_an_upscale_is_refused(server: Server) -> None:
    server.grant("alice", -(START_BALANCE - 1.0))
    refused = server.post(URL, token=server.alice, json=b64(server, scale=2))
    assert refused.status_code == 429, refused.text[:300]
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert server.balance("alice") == 1.0


def test_the_sdk_asks_a_generation_for_an_upscale(server: Server, tmp_path: Path) -> None:
    with openai.OpenAI(base_url=server.url + "/v1", api_key=server.alice, max_retries=0) as client:
        result = client.images.generate(
            prompt="a lighthouse",
            model="dall-e-2",
            size="256x256",
            response_format="b64_json",
            extra_body={"upscale": {"model": "esrgan", "scale": 2}},
        )
    assert result.size == "512x512"
    assert result.data and b64_image(result.data[0].b64_json or "").size == (512, 512)
    assert server.balance("alice") == START_BALANCE - PRICE  # the generation's price, at its model
