"""``S3MediaStore`` against a real S3-compatible server on loopback (moto's server mode, authentication on):
the store contract, a 10 MB object, missing objects, refused credentials, presigned links, and a whole
server whose media lives in the bucket (served by limner, handed out as S3 links, read back for edits)."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from limner.app import create_app
from limner.cli.local_services import S3Server, s3_server
from limner.core.errors import LimnerError, NotFound
from limner.media.s3_store import S3Location, S3MediaStore
from limner.settings import Settings
from tests.conftest import pattern_models
from tests.support.live_server import live_server

DATA = b"\x89PNG pretend image bytes"
KEY = hashlib.sha256(DATA).hexdigest() + ".png"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@pytest.fixture(scope="module")
def open_s3() -> Iterator[S3Server]:
    """For presigned links, which moto checks only with authentication off (see limner.cli.local_services)."""
    with s3_server(authenticate=False) as server:
        yield server


def location(s3: S3Server, bucket: str, **overrides: object) -> S3Location:
    fields: dict[str, object] = {
        "bucket": bucket,
        "endpoint_url": s3.endpoint_url,
        "access_key_id": s3.access_key_id,
        "secret_access_key": s3.secret_access_key,
        "path_style": True,
        "prefix": "limner/",
        **overrides,
    }
    return S3Location(**fields)  # type: ignore[arg-type]


@pytest.fixture
def store(s3: S3Server) -> S3MediaStore:
    return S3MediaStore(location(s3, s3.new_bucket()), presign_ttl=600)


async def test_put_get_owners_round_trip_is_content_addressed(store: S3MediaStore, s3: S3Server) -> None:
    assert await store.put(DATA, mime_type="image/png", owner="alice") == KEY
    assert await store.put(DATA, mime_type="image/png", owner="bob/with slashes") == KEY
    assert await store.get(KEY) == DATA
    assert await store.exists(KEY)
    assert await store.owners(KEY) == {"alice", "bob/with slashes"}
    stored = s3.client().head_object(Bucket=store.bucket, Key=f"limner/media/{KEY[:2]}/{KEY}")
    assert stored["ContentType"] == "image/png" and stored["ContentLength"] == len(DATA)


async def test_a_ten_megabyte_object(store: S3MediaStore) -> None:
    big = os.urandom(10 * 2**20)
    key = await store.put(big, mime_type="image/webp", owner="alice")
    assert key.endswith(".webp")
    assert hashlib.sha256(await store.get(key)).digest() == hashlib.sha256(big).digest()


async def test_missing_and_malformed_keys_are_not_found(store: S3MediaStore) -> None:
    absent = "0" * 64 + ".png"
    for call in (store.get(absent), store.owners(absent), store.delete(absent)):
        with pytest.raises(NotFound) as caught:
            await call
        assert caught.value.message == f"no media with key {absent}"
    assert not await store.exists(absent)
    assert not await store.exists("../../etc/passwd")
    with pytest.raises(NotFound) as caught:
        await store.get("../../etc/passwd")
    assert caught.value.message == "no media with that key"


async def test_deleting_owners_removes_the_image_with_the_last_one(store: S3MediaStore) -> None:
    await store.put(DATA, mime_type="image/png", owner="alice")
    await store.put(DATA, mime_type="image/png", owner="bob")
    with pytest.raises(NotFound):
        await store.delete(KEY, owner="mallory")
    await store.delete(KEY, owner="alice")
    assert await store.owners(KEY) == {"bob"} and await store.get(KEY) == DATA
    await store.delete(KEY, owner="bob")
    assert not await store.exists(KEY)


async def test_refused_credentials_are_a_store_error_that_names_no_bucket(
    s3: S3Server, caplog: pytest.LogCaptureFixture
) -> None:
    bucket = s3.new_bucket()
    wrong = S3MediaStore(location(s3, bucket, access_key_id="AKIAWRONGWRONGWRONG1", secret_access_key="nope"))
    with caplog.at_level(logging.ERROR), pytest.raises(LimnerError) as caught:
        await wrong.put(DATA, mime_type="image/png", owner="alice")
    assert caught.value.code == "internal_error"
    assert caught.value.message == "the media store refused limner's credentials and could not write the image"
    assert bucket not in caught.value.message and s3.endpoint_url not in caught.value.message
    assert "refused limner's credentials" in caplog.text and "403" in caplog.text


async def test_presigned_links_download_without_credentials_and_are_recognised(open_s3: S3Server) -> None:
    store = S3MediaStore(location(open_s3, open_s3.new_bucket()), presign_ttl=600)
    await store.put(DATA, mime_type="image/png", owner="alice")
    url = store.presigned_url(KEY)
    assert url is not None and url.startswith(store.location.endpoint_url or "")
    answer = httpx.get(url)
    assert answer.status_code == 200 and answer.content == DATA
    assert answer.headers["content-type"] == "image/png"
    assert store.key_in_url(url) == KEY
    assert store.key_in_url("https://elsewhere.example/limner/media/00/" + KEY) is None


# --- a whole server on the bucket -------------------------------------------------------------------------------


def s3_settings(s3: S3Server, tmp_path: Path, bucket: str, **overrides: Any) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        models=pattern_models(),
        default_model="pattern",
        media_store="s3",
        s3_bucket=bucket,
        s3_endpoint_url=s3.endpoint_url,
        s3_access_key_id=s3.access_key_id,
        s3_secret_access_key=s3.secret_access_key,
        s3_path_style=True,
        signing_secret="one secret shared by every replica",
        **overrides,
    )


def red_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (220, 20, 20)).save(out, "PNG")
    return out.getvalue()


def test_media_made_by_one_server_is_served_by_another_and_read_back_for_edits(s3: S3Server, tmp_path: Path) -> None:
    bucket = s3.new_bucket()
    with live_server(create_app(s3_settings(s3, tmp_path / "one", bucket))) as first:
        made = httpx.post(
            first + "/v1/images/generations", json={"prompt": "a red apple", "size": "64x64"}, timeout=30
        ).json()
    url = made["data"][0]["url"]
    path = url.removeprefix(first)
    assert path.startswith("/media/")
    assert not list((tmp_path / "one" / "data").glob("media/**/*.png")), "nothing on the local disk"

    with live_server(create_app(s3_settings(s3, tmp_path / "two", bucket))) as second:
        served = httpx.get(second + path)
        assert served.status_code == 200
        assert Image.open(io.BytesIO(served.content)).size == (64, 64)
        edit = httpx.post(
            second + "/v1/generation/images",
            json={"model": "pattern", "prompt": "make it blue", "image": second + path},
            timeout=30,
        )
        assert edit.status_code == 200, edit.text


def test_direct_links_hand_out_presigned_urls_that_come_back_as_inputs(open_s3: S3Server, tmp_path: Path) -> None:
    settings = s3_settings(open_s3, tmp_path, open_s3.new_bucket(), s3_direct_links=True)
    with live_server(create_app(settings)) as url:
        made = httpx.post(url + "/v1/images/generations", json={"prompt": "x", "size": "64x64"}, timeout=30).json()
        link = made["data"][0]["url"]
        assert link.startswith(open_s3.endpoint_url) and "Signature=" in link
        assert Image.open(io.BytesIO(httpx.get(link).content)).size == (64, 64)
        # Sent back as an input, the bucket's own link is read from the store, not fetched (a loopback
        # address would be refused by the fetcher's private-address guard).
        edit = httpx.post(
            url + "/api/images/generations",
            json={"model": "pattern", "prompt": "again", "image": link, "size": "64x64", "response_format": "b64_json"},
            timeout=30,
        )
        assert edit.status_code == 200, edit.text
        assert Image.open(io.BytesIO(base64.b64decode(edit.json()["data"][0]["b64_json"]))).size == (64, 64)


def test_s3_without_a_bucket_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"media_store = 's3' needs s3_bucket \(LIMNER_S3_BUCKET\)"):
        Settings(data_dir=tmp_path, media_store="s3")
