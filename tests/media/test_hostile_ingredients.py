"""Inputs a hostile user would send to make signing costly, fail, or reach the network: each gets bounded
work and a clear outcome (the input stays an ingredient; its own credentials are kept only when small,
sound and shallow, and its title says why they were left out), and no URL in an image is ever fetched."""

from __future__ import annotations

import io
import json
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import c2pa
import numpy as np
import pytest
from PIL import Image

from limner.media.ingredients import checked_ingredient
from limner.media.manifest_store import store_size, without_store
from limner.media.provenance import (
    ContentCredentials,
    Ingredient,
    Made,
    development_chain,
    load_credentials,
    read,
    signed_format,
)

CAPTURE = "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"


def encoded(fmt: str, color: tuple[int, int, int] = (200, 40, 30), **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("c2pa")


@pytest.fixture(scope="module")
def credentials(data_dir: Path) -> ContentCredentials:
    return load_credentials(data_dir)


def camera_signed(data_dir: Path, image: bytes, mime: str, *, resource_bytes: int = 0) -> bytes:
    """``image`` signed by "a camera" with the C2PA library directly, with a thumbnail of ``resource_bytes``
    random bytes if asked (a store of that size)."""
    chain, key = development_chain(data_dir)
    info = c2pa.C2paSignerInfo(alg=b"es256", sign_cert=chain.read_bytes(), private_key=key.read_bytes(), ta_url=None)
    manifest: dict[str, object] = {
        "claim_generator_info": [{"name": "camera", "version": "1"}],
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": [{"action": "c2pa.created", "digitalSourceType": CAPTURE}]}}
        ],
    }
    if resource_bytes:
        manifest["thumbnail"] = {"format": "image/jpeg", "identifier": "thumbnail.jpg"}
    with c2pa.Signer.from_info(info) as signer, c2pa.Builder(manifest) as builder:
        if resource_bytes:
            builder.add_resource("thumbnail.jpg", io.BytesIO(os.urandom(resource_bytes)))
        signed = io.BytesIO()
        builder.sign(signer, mime, io.BytesIO(image), signed)
    return signed.getvalue()


def png_with_store(png: bytes, store: bytes) -> bytes:
    """``png`` with its ``caBX`` chunk's contents replaced by ``store`` (a valid chunk, CRC and all)."""
    start = png.index(b"caBX") - 4
    (length,) = struct.unpack_from(">I", png, start)
    chunk = struct.pack(">I", len(store)) + b"caBX" + store + struct.pack(">I", zlib.crc32(b"caBX" + store))
    return png[:start] + chunk + png[start + 12 + length :]


def made_from(credentials: ContentCredentials, ingredient: Ingredient) -> bytes:
    return credentials.sign(encoded("PNG", (1, 2, 3)), "image/png", Made(model="m", ingredients=[ingredient]))


@pytest.mark.parametrize(("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
def test_a_store_is_found_and_cut_out_without_touching_the_picture(data_dir: Path, fmt: str, mime: str) -> None:
    plain = encoded(fmt)
    signed = camera_signed(data_dir, plain, mime)
    assert store_size(plain, mime) == 0 and without_store(plain, mime) == plain
    assert 1000 < store_size(signed, mime) <= len(signed) - len(plain) + 64
    bare = without_store(signed, mime)
    assert signed_format(signed) == mime and signed_format(bare) is None and store_size(bare, mime) == 0
    with Image.open(io.BytesIO(bare)) as cut, Image.open(io.BytesIO(signed)) as whole:
        assert np.array_equal(np.asarray(cut.convert("RGB")), np.asarray(whole.convert("RGB")))


def test_an_oversized_store_is_left_out_and_the_title_says_so(data_dir: Path, credentials: ContentCredentials) -> None:
    heavy = camera_signed(data_dir, encoded("PNG"), "image/png", resource_bytes=2 << 20)
    ingredient = checked_ingredient(heavy, "image/png", "image")
    assert (
        ingredient.title.startswith("image (its Content Credentials (20")
        and "over the 1024 KB limit" in ingredient.title
    )
    assert store_size(ingredient.data, "image/png") == 0
    result = made_from(credentials, ingredient)
    assert len(result) < 64 * 1024, "the 2 MiB store is not copied into the result"
    report = read(result, "image/png")
    assert report.state == "Valid" and report.actions == ["c2pa.opened", "c2pa.edited"]
    assert report.ingredients == [ingredient.title]


def test_a_store_of_a_normal_size_is_kept(data_dir: Path, credentials: ContentCredentials) -> None:
    camera = camera_signed(data_dir, encoded("JPEG"), "image/jpeg")
    ingredient = checked_ingredient(camera, "image/jpeg", "image")
    assert ingredient == Ingredient(camera, "image/jpeg", "image")
    with c2pa.Reader("image/png", io.BytesIO(made_from(credentials, ingredient))) as reader:
        store = json.loads(reader.json())
    assert len(store["manifests"]) == 2, "the camera's manifest is kept inside its ingredient"


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_an_unreadable_store_is_left_out(data_dir: Path, credentials: ContentCredentials, damage: str) -> None:
    signed = camera_signed(data_dir, encoded("PNG"), "image/png")
    start = signed.index(b"caBX")
    (length,) = struct.unpack_from(">I", signed, start - 4)
    store = signed[start + 4 : start + 4 + length]
    broken = png_with_store(signed, b"\x00\x00\x00\x20jumb" + b"c2pa" * 64 if damage == "garbage" else store[:900])
    with pytest.raises(Exception, match="could not sign"):
        made_from(credentials, Ingredient(broken, "image/png", "image"))  # what the library does unchecked
    ingredient = checked_ingredient(broken, "image/png", "image")
    assert ingredient.title == "image (its Content Credentials could not be read and were left out)"
    report = read(made_from(credentials, ingredient), "image/png")
    assert report.state == "Valid" and report.actions == ["c2pa.opened", "c2pa.edited"], "still an edit of it"


def test_a_store_whose_signature_fails_is_kept_with_its_failure(
    data_dir: Path, credentials: ContentCredentials
) -> None:
    signed = camera_signed(data_dir, encoded("PNG"), "image/png")
    tampered = bytearray(signed)
    tampered[signed.index(b"caBX") + 3000] ^= 1
    ingredient = checked_ingredient(bytes(tampered), "image/png", "image")
    assert ingredient.title == "image", "a store that parses is kept; the new manifest records its failure"
    with c2pa.Reader("image/png", io.BytesIO(made_from(credentials, ingredient))) as reader:
        store = json.loads(reader.json())
    parent = store["manifests"][store["active_manifest"]]["ingredients"][0]
    assert parent["validation_results"]["activeManifest"]["failure"], parent


def test_a_deep_chain_is_cut_at_the_limit(credentials: ContentCredentials) -> None:
    image = encoded("PNG")
    for level in range(5):
        image = credentials.sign(
            encoded("PNG", (level, 0, 0)), "image/png", Made("m", [Ingredient(image, "image/png", "x")])
        )
    kept = checked_ingredient(image, "image/png", "image", max_manifests=5)
    cut = checked_ingredient(image, "image/png", "image", max_manifests=4)
    assert kept.title == "image" and kept.data == image
    assert cut.title == "image (its Content Credentials (5 manifests) are over the limit of 4 and were left out)"


@pytest.fixture
def listener() -> Iterator[tuple[str, list[str]]]:
    """A server on loopback that records every request it gets."""
    hits: list[str] = []

    class Record(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Record)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/manifest.c2pa", hits
    server.shutdown()
    server.server_close()


def test_no_url_an_image_names_is_fetched(credentials: ContentCredentials, listener: tuple[str, list[str]]) -> None:
    url, hits = listener
    xmp = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description xmlns:dcterms="http://purl.org/dc/terms/" dcterms:provenance="{url}"/></rdf:RDF></x:xmpmeta>'
    )
    remote = encoded("JPEG", xmp=xmp.encode())
    with pytest.raises(c2pa.C2paError):  # the library's default: it fetches the URL (here it 404s)
        c2pa.Reader("image/jpeg", io.BytesIO(remote))
    assert hits == ["/manifest.c2pa"]
    hits.clear()
    assert signed_format(remote) is None and not read(remote, "image/jpeg").present
    report = read(made_from(credentials, checked_ingredient(remote, "image/jpeg", "image")), "image/png")
    assert report.state == "Valid" and report.ingredients == ["image"]
    assert hits == [], "limner's reader and signer stay off the network"
