"""Input images cannot take the server's memory: a request holds at most what it will use, whatever the
shape or number of its inputs. Peak memory is measured in the server's process (the live server runs in
this one) with the shapes that took gigabytes before: a thin 20000x2000 strip, a 16000x2000 one, and
three requests of 16 large inputs at once."""

from __future__ import annotations

import asyncio
import base64
import io
from pathlib import Path

import httpx
import pytest
from PIL import Image

from limner.app import create_app
from limner.settings import Settings
from tests.support.live_server import live_server
from tests.support.memory import peak_growth


def png(width: int, height: int) -> bytes:
    """A real-size PNG that compresses to almost nothing, like the hostile uploads it stands for."""
    buffer = io.BytesIO()
    image = Image.new("RGB", (width, height), (200, 40, 30))
    image.paste((20, 90, 200), (0, 0, width // 2, height // 2))
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> object:
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("data")))
    with live_server(app) as url, httpx.Client(base_url=url, timeout=300) as client:
        warm = client.post(
            "/v1/images/edits",
            files={"image": ("warm.png", png(300, 200), "image/png")},
            data={"prompt": "an apple", "size": "256x256", "response_format": "b64_json"},
        )
        assert warm.status_code == 200, warm.text  # model loaded before anything is measured
        yield url


def edit(url: str, uploads: list[bytes], size: str = "256x256") -> httpx.Response:
    files = [("image[]", (f"in{index}.png", data, "image/png")) for index, data in enumerate(uploads)]
    data = {"prompt": "an apple", "size": size, "response_format": "b64_json"}
    return httpx.post(f"{url}/v1/images/edits", files=files, data=data, timeout=300)


def decoded(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    [item] = response.json()["data"]
    return Image.open(io.BytesIO(base64.b64decode(item["b64_json"])))


def test_a_thin_strip_is_refused_before_it_is_decoded(server: str) -> None:
    upload = png(20000, 2000)  # 117 KB; padded to a square it was 1.2 GB of pixels
    with peak_growth() as growth:
        response = edit(server, [upload])
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_image" and error["param"] == "image[]"
    assert "20000x2000 has an aspect ratio of 10.0:1; at most 8:1 is accepted" in error["message"]
    assert growth.mib < 50, f"refusing a 117 KB upload took {growth.mib} MiB"


def test_a_wide_input_takes_what_it_decodes_and_no_more(server: str) -> None:
    upload = png(16000, 2000)  # 32 million pixels: 96 MiB decoded, 1.5 GiB before it was shrunk first
    with peak_growth() as growth:
        image = decoded(edit(server, [upload]))
    assert image.size == (256, 256)
    assert growth.mib < 300, f"one 16000x2000 input took {growth.mib} MiB"


def test_three_requests_of_sixteen_large_inputs_stay_bounded(server: str) -> None:
    upload = png(6000, 3000)  # 54 MiB decoded each: 16 x 3 of them held at once was 2.6 GiB

    async def three() -> list[httpx.Response]:
        return await asyncio.gather(*(asyncio.to_thread(edit, server, [upload] * 16) for _ in range(3)))

    with peak_growth() as growth:
        responses = asyncio.run(three())
    for response in responses:
        assert decoded(response).size == (256, 256)
    assert growth.mib < 400, f"three requests of 16 inputs took {growth.mib} MiB"


def test_past_the_input_memory_budget_a_request_is_told_to_retry(tmp_path: Path) -> None:
    # 2 MiB holds one input of the built-in model (512x512 pixels at 4 bytes, and its bytes as sent) but not two.
    app = create_app(Settings(data_dir=tmp_path, input_memory_mb=2))
    with live_server(app) as url:
        one = edit(url, [png(600, 600)])
        two = edit(url, [png(600, 600), png(600, 600)])
    assert decoded(one).size == (256, 256)
    assert two.status_code == 429
    error = two.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert "MiB of input images" in error["message"] and "2 MiB limit" in error["message"]
    assert int(two.headers["retry-after"]) >= 1
