"""With ``LIMNER_INVISIBLE_WATERMARK`` set, delivered images carry the mark under valid Content Credentials
(the manifest signs the marked pixels), ``limner provenance check`` finds it, and a bad payload stops
``limner serve`` with a message."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import httpx
import pytest
from PIL import Image

from limner.app import create_app
from limner.media.provenance import read
from limner.media.watermark import InvisibleWatermark
from limner.settings import Settings
from tests.conftest import pattern_models
from tests.integration.test_content_credentials import run_limner
from tests.support.live_server import live_server

pytest.importorskip("imwatermark", reason="the invisible watermark needs limner[watermark]")


def test_delivered_images_carry_the_mark_and_the_check_finds_it(tmp_path: Path) -> None:
    # The test card's flat squares are too smooth for dwtDct (see limner.media.watermark); dwtDctSvd reads them.
    settings = Settings(
        data_dir=tmp_path,
        models=pattern_models(),
        default_model="pattern",
        invisible_watermark="dwtDctSvd",
        invisible_watermark_payload="acme",
    )
    body = {"model": "gpt-image-1", "prompt": "a red apple", "size": "1024x1024", "output_format": "jpeg"}
    with live_server(create_app(settings)) as url:
        response = httpx.post(url + "/v1/images/generations", json=body, timeout=120)
    assert response.status_code == 200, response.text
    data = base64.b64decode(response.json()["data"][0]["b64_json"])
    report = read(data, "image/jpeg")
    assert report.state == "Valid" and report.actions == ["c2pa.created"], report
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (1024, 1024)
        assert InvisibleWatermark("acme", "dwtDctSvd").detect(image).matching == 32
        assert not InvisibleWatermark("acme", "dwtDct").detect(image).found  # the reading needs the method
    (tmp_path / "marked.jpg").write_bytes(data)

    check = run_limner(
        tmp_path,
        "provenance",
        "check",
        str(tmp_path / "marked.jpg"),
        "--json",
        LIMNER_INVISIBLE_WATERMARK="dwtDctSvd",
        LIMNER_INVISIBLE_WATERMARK_PAYLOAD="acme",
    )
    assert check.returncode == 0, check.stderr
    found = json.loads(check.stdout)["watermark"]
    assert found == {
        "checked": True,
        "found": True,
        "method": "dwtDctSvd",
        "payload": "acme",
        "bits": 32,
        "matching": 32,
    }
    other = run_limner(tmp_path, "provenance", "check", str(tmp_path / "marked.jpg"), "--watermark-payload", "limner")
    assert other.returncode == 0, other.stderr
    assert "invisible watermark: not found (dwtDct, " in other.stdout and "of 48 bits of 'limner'" in other.stdout


def test_the_check_reads_an_unmarked_file_as_unmarked(tmp_path: Path) -> None:
    plain = tmp_path / "plain.png"
    Image.linear_gradient("L").resize((300, 300)).convert("RGB").save(plain)
    run = run_limner(tmp_path, "provenance", "check", str(plain))
    assert run.returncode == 2 and "no Content Credentials" in run.stdout
    assert "invisible watermark: not found (dwtDct, " in run.stdout
    small = tmp_path / "small.png"
    Image.new("RGB", (64, 64)).save(small)
    assert (
        "invisible watermark: not readable (the image is under 256x256 pixels)"
        in run_limner(tmp_path, "provenance", "check", str(small)).stdout
    )


def test_a_bad_payload_stops_serve(tmp_path: Path) -> None:
    run = run_limner(
        tmp_path, "serve", LIMNER_INVISIBLE_WATERMARK="dwtDct", LIMNER_INVISIBLE_WATERMARK_PAYLOAD="x" * 17
    )
    assert run.returncode == 2
    assert "invisible watermark payload must be 1 to 16 bytes of UTF-8" in run.stderr, run.stderr
