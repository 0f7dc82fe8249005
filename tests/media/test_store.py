from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

import pytest

from limner.core.errors import InvalidRequest, LimnerError, NotFound
from limner.media.store import LocalMediaStore, content_key, is_valid_key, mime_type_for

DATA = b"\x89PNG pretend image bytes"
DIGEST = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> LocalMediaStore:
    return LocalMediaStore(tmp_path / "media")


def all_files(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


async def test_put_get_round_trip_is_content_addressed_and_sharded(store: LocalMediaStore) -> None:
    key = await store.put(DATA, mime_type="image/png", owner="alice")

    assert key == f"{DIGEST}.png"
    assert await store.get(key) == DATA
    assert await store.exists(key)
    assert (store.root / DIGEST[:2] / DIGEST[2:4] / key).read_bytes() == DATA
    assert mime_type_for(key) == "image/png"


@pytest.mark.parametrize(("mime", "extension"), [("image/png", "png"), ("image/jpeg", "jpg"), ("image/webp", "webp")])
async def test_extension_follows_mime_type(store: LocalMediaStore, mime: str, extension: str) -> None:
    key = await store.put(DATA, mime_type=mime, owner="alice")
    assert key == f"{DIGEST}.{extension}"
    assert mime_type_for(key) == mime


async def test_unknown_mime_type_is_refused(store: LocalMediaStore) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await store.put(DATA, mime_type="image/gif", owner="alice")
    assert caught.value.code == "invalid_request"
    assert caught.value.message == "cannot store media of type 'image/gif'; use PNG, JPEG or WebP"


async def test_same_bytes_twice_is_idempotent(store: LocalMediaStore) -> None:
    first = await store.put(DATA, mime_type="image/png", owner="alice")
    path = store.root / DIGEST[:2] / DIGEST[2:4] / first
    before = path.stat().st_mtime_ns
    sidecar_before = (path.parent / f"{first}.json").read_bytes()

    second = await store.put(DATA, mime_type="image/png", owner="alice")

    assert second == first
    assert path.stat().st_mtime_ns == before
    assert (path.parent / f"{first}.json").read_bytes() == sidecar_before
    assert all_files(store.root) == sorted(
        [f"{DIGEST[:2]}/{DIGEST[2:4]}/{first}", f"{DIGEST[:2]}/{DIGEST[2:4]}/{first}.json"]
    )


async def test_second_owner_is_added_and_created_time_kept(store: LocalMediaStore) -> None:
    key = await store.put(DATA, mime_type="image/png", owner="alice")
    sidecar = store.root / DIGEST[:2] / DIGEST[2:4] / f"{key}.json"
    created = json.loads(sidecar.read_bytes())["created"]

    await store.put(DATA, mime_type="image/png", owner="bob")

    assert await store.owners(key) == {"alice", "bob"}
    meta = json.loads(sidecar.read_bytes())
    assert meta == {"created": created, "owners": ["alice", "bob"]}


async def test_concurrent_puts_keep_every_owner(store: LocalMediaStore) -> None:
    owners = {f"consumer-{index}" for index in range(12)}
    keys = await asyncio.gather(*(store.put(DATA, mime_type="image/png", owner=owner) for owner in owners))
    assert set(keys) == {f"{DIGEST}.png"}
    assert await store.owners(keys[0]) == owners
    assert not [name for name in all_files(store.root) if name.endswith(".tmp")]


async def test_no_temp_files_left_behind(store: LocalMediaStore) -> None:
    for index in range(5):
        await store.put(DATA + bytes([index]), mime_type="image/webp", owner="alice")
    files = all_files(store.root)
    assert len(files) == 10
    assert not [name for name in files if ".tmp" in name or Path(name).name.startswith(".")]


@pytest.mark.parametrize("failing", ["replace", "fsync"])
async def test_failure_mid_write_leaves_nothing_visible(
    store: LocalMediaStore, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    def explode(*args: object) -> None:
        raise OSError(28, "No space left on device", str(store.root))

    monkeypatch.setattr(os, failing, explode)

    with pytest.raises(LimnerError) as caught:
        await store.put(DATA, mime_type="image/png", owner="alice")

    assert type(caught.value) is LimnerError
    assert caught.value.code == "internal_error"
    assert caught.value.message == "the media store could not write the image"
    assert str(store.root) not in caught.value.message
    monkeypatch.undo()
    assert all_files(store.root) == []
    assert not await store.exists(f"{DIGEST}.png")


async def test_half_written_file_is_never_visible(store: LocalMediaStore, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fdopen = os.fdopen

    class HalfWritten:
        """Writes half the bytes, then fails: what a crash or full disk looks like mid-write."""

        def __init__(self, fd: int, mode: str) -> None:
            self.file = real_fdopen(fd, mode)

        def __enter__(self) -> HalfWritten:
            return self

        def __exit__(self, *exc: object) -> None:
            self.file.close()

        def write(self, data: bytes) -> int:
            self.file.write(data[: len(data) // 2])
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdopen", HalfWritten)
    with pytest.raises(LimnerError):
        await store.put(DATA, mime_type="image/png", owner="alice")
    monkeypatch.undo()
    assert all_files(store.root) == []


async def test_missing_key_is_not_found_without_paths(store: LocalMediaStore) -> None:
    key = f"{'0' * 64}.png"
    for call in (store.get(key), store.owners(key), store.delete(key)):
        with pytest.raises(NotFound) as caught:
            await call
        assert caught.value.code == "unknown_request"
        assert caught.value.message == f"no media with key {key}"
        assert str(store.root) not in caught.value.message
    assert not await store.exists(key)


TRAVERSAL_KEYS = [
    "../../etc/passwd",
    f"../{DIGEST}.png",
    f"{DIGEST[:2]}/{DIGEST[2:4]}/{DIGEST}.png",
    f"{DIGEST}.png.json",
    f"{DIGEST}.png/../../x",
    f"{DIGEST.upper()}.png",
    f"{DIGEST}.gif",
    f"{DIGEST}.png\x00",
    f"{DIGEST}.png\n",
    f"{DIGEST[:63]}.png",
    "/etc/passwd",
    "",
]


@pytest.mark.parametrize("key", TRAVERSAL_KEYS)
async def test_invalid_keys_are_not_found(store: LocalMediaStore, key: str) -> None:
    await store.put(DATA, mime_type="image/png", owner="alice")
    assert not is_valid_key(key)
    assert not await store.exists(key)
    with pytest.raises(NotFound) as caught:
        await store.get(key)
    assert caught.value.code == "unknown_request"
    assert caught.value.message == "no media with that key"
    with pytest.raises(NotFound):
        await store.owners(key)
    with pytest.raises(NotFound):
        await store.delete(key)


async def test_delete_by_owner_keeps_media_until_the_last_owner_goes(store: LocalMediaStore) -> None:
    key = await store.put(DATA, mime_type="image/png", owner="alice")
    await store.put(DATA, mime_type="image/png", owner="bob")

    await store.delete(key, owner="alice")
    assert await store.owners(key) == {"bob"}
    with pytest.raises(NotFound):
        await store.delete(key, owner="alice")  # not yours (any more): indistinguishable from absent

    await store.delete(key, owner="bob")
    assert not await store.exists(key)
    assert all_files(store.root) == []


async def test_delete_everything(store: LocalMediaStore) -> None:
    key = await store.put(DATA, mime_type="image/png", owner="alice")
    await store.delete(key)
    assert not await store.exists(key)
    with pytest.raises(NotFound):
        await store.get(key)
    assert all_files(store.root) == []


async def test_media_without_sidecar_has_no_owners(store: LocalMediaStore) -> None:
    key = await store.put(DATA, mime_type="image/png", owner="alice")
    (store.root / DIGEST[:2] / DIGEST[2:4] / f"{key}.json").unlink()
    assert await store.owners(key) == set()
    await store.put(DATA, mime_type="image/png", owner="alice")
    assert await store.owners(key) == {"alice"}


def test_key_for_matches_sha256() -> None:
    assert content_key(b"", "image/jpeg") == hashlib.sha256(b"").hexdigest() + ".jpg"
