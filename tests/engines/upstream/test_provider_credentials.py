"""A provider's image that arrives with Content Credentials is never stripped: delivered byte for byte when
limner changes nothing, and the parent ingredient of limner's own manifest when it does."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
from PIL import Image

from limner.app import create_app
from limner.media.provenance import Made, load_credentials, read
from limner.settings import Settings
from tests.engines.upstream.conftest import Fake
from tests.support.live_server import live_server


def test_a_signed_provider_image_keeps_its_credentials(fakes: dict[str, Fake], tmp_path: Path) -> None:
    provider = load_credentials(tmp_path / "provider")  # the provider's own signer, not limner's
    buffer = io.BytesIO()
    Image.new("RGB", (256, 256), (30, 90, 200)).save(buffer, "PNG")
    signed = provider.sign(buffer.getvalue(), "image/png", Made(model="provider-model"))
    fakes["openai"].control.set(None, served=signed)
    entry = fakes["openai"].entry(id="signed-provider", upstream_model="dall-e-2")
    settings = Settings(data_dir=tmp_path / "limner", models=[entry], default_model="signed-provider")
    with live_server(create_app(settings)) as url:

        def generate(size: str) -> bytes:
            body = {"model": "signed-provider", "prompt": "x", "size": size, "response_format": "b64_json"}
            response = httpx.post(url + "/v1/images/generations", json=body, timeout=30)
            assert response.status_code == 200, response.text
            return base64.b64decode(response.json()["data"][0]["b64_json"])

        as_sent, resized = generate("256x256"), generate("512x512")
    assert as_sent == signed, "nothing changed: the provider's bytes, byte for byte"
    report = read(resized, "image/png")
    assert report.state == "Valid" and report.agents == ["signed-provider"]
    assert report.actions == ["c2pa.opened", "c2pa.edited"] and report.ingredients == ["provider image"]
    assert Image.open(io.BytesIO(resized)).size == (512, 512)


def test_a_signed_provider_image_that_must_be_flattened_is_signed_again(fakes: dict[str, Fake], tmp_path: Path) -> None:
    """Delivered as sent only when nothing changes: an RGBA image asked for on an opaque background is
    flattened, so limner signs the result, with the provider's image as its parent."""
    provider = load_credentials(tmp_path / "provider")
    buffer = io.BytesIO()
    Image.new("RGBA", (1024, 1024), (30, 90, 200, 100)).save(buffer, "PNG")
    signed = provider.sign(buffer.getvalue(), "image/png", Made(model="provider-model"))
    fakes["openai"].control.set(None, served=signed)
    entry = fakes["openai"].entry(id="signed-provider", upstream_model="gpt-image-1")
    settings = Settings(data_dir=tmp_path / "limner", models=[entry], default_model="signed-provider")
    with live_server(create_app(settings)) as url:
        body = {"model": "signed-provider", "prompt": "x", "background": "opaque", "response_format": "b64_json"}
        response = httpx.post(url + "/v1/images/generations", json=body, timeout=30)
    assert response.status_code == 200, response.text
    flattened = base64.b64decode(response.json()["data"][0]["b64_json"])
    assert flattened != signed and Image.open(io.BytesIO(flattened)).mode == "RGB"
    report = read(flattened, "image/png")
    assert report.state == "Valid" and report.ingredients == ["provider image"]
