"""Every dialect delivers images with Content Credentials that the C2PA library validates; an edit names its
input; ``LIMNER_C2PA=off`` turns them off; an unusable certificate stops ``limner serve`` with a message;
``limner provenance check`` reports what a file carries."""

from __future__ import annotations

import base64
import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from limner.app import create_app
from limner.media.provenance import read
from limner.settings import Settings
from tests.conftest import pattern_models
from tests.support.live_server import live_server

LIMNER = Path(sys.executable).with_name("limner")
AUTH = {"Authorization": "Bearer any"}


@pytest.fixture(scope="module")
def signing_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("c2pa")
    settings = Settings(data_dir=data_dir, models=pattern_models(), default_model="pattern")
    with live_server(create_app(settings)) as url:
        yield url


def assert_made_by(data: bytes, mime: str, model: str = "pattern") -> None:
    report = read(data, mime)
    assert report.present, f"no manifest in the {mime} answer"
    assert report.state == "Valid" and report.failures == ["signingCredential.untrusted"], report
    assert report.actions == ["c2pa.created"] and report.agents == [model]


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_openai_answers_carry_credentials_in_every_format(signing_server: str, fmt: str) -> None:
    body = {"model": "gpt-image-1", "prompt": "a red apple", "size": "1024x1024", "output_format": fmt}
    response = httpx.post(signing_server + "/v1/images/generations", json=body, timeout=60)
    assert response.status_code == 200, response.text
    assert_made_by(base64.b64decode(response.json()["data"][0]["b64_json"]), f"image/{fmt}")


def test_every_other_dialect_delivers_signed_images(signing_server: str) -> None:
    with httpx.Client(base_url=signing_server, timeout=60, headers=AUTH) as client:
        imagineart = client.post("/v1/images/generations", data={"prompt": "a red apple", "aspect_ratio": "1:1"})
        assert imagineart.status_code == 200, imagineart.text
        assert_made_by(imagineart.content, "image/png")
        milady = client.post("/api/v1/generate-image", json={"prompt": "a red apple"})
        assert milady.status_code == 200, milady.text
        assert_made_by(client.get(milady.json()["images"][0]["url"]).content, "image/png")
        aiml = client.post("/v1/generation/images", json={"model": "image-gen.pro-1.0", "prompt": "x", "size": "1K"})
        assert aiml.status_code == 200, aiml.text
        link = client.get(aiml.json()["data"]["image"]["url"]).json()["url"]
        assert_made_by(httpx.get(link).content, "image/png")


def test_an_edit_names_its_input_as_an_ingredient(signing_server: str) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), (20, 200, 40)).save(buffer, "PNG")
    files = {"image": ("garden.png", buffer.getvalue(), "image/png")}
    data = {"model": "gpt-image-1", "prompt": "add a cat", "size": "1024x1024"}
    response = httpx.post(signing_server + "/v1/images/edits", files=files, data=data, timeout=60)
    assert response.status_code == 200, response.text
    report = read(base64.b64decode(response.json()["data"][0]["b64_json"]), "image/png")
    assert report.state == "Valid" and report.actions == ["c2pa.opened", "c2pa.edited"]
    assert report.ingredients == ["image"]


def test_the_off_switch(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, models=pattern_models(), default_model="pattern", c2pa="off")
    with live_server(create_app(settings)) as url:
        response = httpx.post(url + "/v1/images/generations", json={"model": "gpt-image-1", "prompt": "x"}, timeout=60)
    assert response.status_code == 200
    assert not read(base64.b64decode(response.json()["data"][0]["b64_json"]), "image/png").present
    assert not (tmp_path / "c2pa-dev-untrusted-key.pem").exists()


def run_limner(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "LIMNER_DATA_DIR": str(tmp_path / "data"), **env}
    return subprocess.run([str(LIMNER), *args], env=environment, capture_output=True, text=True, timeout=120)


def test_an_unusable_certificate_stops_serve(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate")
    (tmp_path / "key.pem").write_text("not a key")
    files = {"LIMNER_C2PA_CERT": str(tmp_path / "cert.pem"), "LIMNER_C2PA_KEY": str(tmp_path / "key.pem")}
    run = run_limner(tmp_path, "serve", **files)
    assert run.returncode == 2
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the C2PA certificate chain is not PEM certificates"), run.stderr


def test_provenance_check_reports_what_a_file_carries(signing_server: str, tmp_path: Path) -> None:
    response = httpx.post(
        signing_server + "/v1/images/generations", json={"model": "gpt-image-1", "prompt": "x"}, timeout=60
    )
    signed = tmp_path / "signed.png"
    signed.write_bytes(base64.b64decode(response.json()["data"][0]["b64_json"]))
    run = run_limner(tmp_path, "provenance", "check", str(signed))
    assert run.returncode == 0, run.stderr
    assert "Content Credentials: Valid" in run.stdout and "actions: c2pa.created" in run.stdout
    assert "software agents: pattern" in run.stdout and "untrusted" in run.stdout
    assert "digital source type: trainedAlgorithmicMedia" in run.stdout and "made at: 20" in run.stdout
    tampered = bytearray(signed.read_bytes())
    tampered[-40] ^= 1
    (tmp_path / "tampered.png").write_bytes(bytes(tampered))
    assert run_limner(tmp_path, "provenance", "check", str(tmp_path / "tampered.png")).returncode == 1
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    unsigned = run_limner(tmp_path, "provenance", "check", str(plain))
    assert unsigned.returncode == 2 and "no Content Credentials" in unsigned.stdout


def test_an_input_with_megabytes_of_credentials_gets_a_clear_outcome(signing_server: str, tmp_path: Path) -> None:
    """An input carrying 2 MiB of credentials: the edit is signed and lists the input, says why its
    credentials were left out, and copies none of the 2 MiB (``limner.media.ingredients``)."""
    from tests.media.test_hostile_ingredients import camera_signed, encoded

    heavy = camera_signed(tmp_path, encoded("PNG"), "image/png", resource_bytes=2 << 20)
    files = {"image": ("heavy.png", heavy, "image/png")}
    data = {"model": "gpt-image-1", "prompt": "add a cat", "size": "1024x1024"}
    response = httpx.post(signing_server + "/v1/images/edits", files=files, data=data, timeout=120)
    assert response.status_code == 200, response.text
    result = base64.b64decode(response.json()["data"][0]["b64_json"])
    report = read(result, "image/png")
    assert report.state == "Valid" and report.actions == ["c2pa.opened", "c2pa.edited"]
    (title,) = report.ingredients
    assert re.fullmatch(
        r"image \(its Content Credentials \(20\d\d KB\) are over the 1024 KB limit and were left out\)", title
    )
    assert len(result) < len(heavy), "the input's store was not copied into the result"
