"""Atomic file writes: the whole file or the old one, never half, and no temporary file left behind."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from limner.core.files import make_private, write_atomically


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_a_new_file_gets_its_mode_and_its_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "secret"
    assert write_atomically(path, b"one") is True
    assert path.read_bytes() == b"one" and _mode(path) == 0o600
    assert write_atomically(tmp_path / "config.toml", b"x", mode=0o644) and _mode(tmp_path / "config.toml") == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == ["secret"]


def test_replacing_keeps_the_files_mode(tmp_path: Path) -> None:
    path = tmp_path / "limner.toml"
    path.write_bytes(b"old")
    path.chmod(0o640)
    assert write_atomically(path, b"new", mode=0o600) is True
    assert path.read_bytes() == b"new" and _mode(path) == 0o640


def test_without_overwrite_the_first_file_stays(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    assert write_atomically(path, b"first", overwrite=False) is True
    assert write_atomically(path, b"second", overwrite=False) is False
    assert path.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["signing.key"]


def test_losing_a_race_to_create_keeps_the_winners_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process creates the file between the existence check and the link: its bytes win."""
    path = tmp_path / "signing.key"
    real_link = os.link

    def racing_link(source: str, target: Path) -> None:
        Path(target).write_bytes(b"winner")
        real_link(source, target)

    monkeypatch.setattr(os, "link", racing_link)
    assert write_atomically(path, b"loser", overwrite=False) is False
    assert path.read_bytes() == b"winner"
    assert [p.name for p in tmp_path.iterdir()] == ["signing.key"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "meta.json"
    path.write_bytes(b"old")

    def no_space(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(OSError, match="No space left"):
        write_atomically(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["meta.json"]


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, whatever the test runner's: without ``make_private`` new files would be 0644."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("umask_022")
def test_make_private_creates_owner_only_paths(tmp_path: Path) -> None:
    directory = tmp_path / "data"
    make_private(directory, create="directory")
    make_private(directory / "limner.db", create="file")
    assert (_mode(directory), _mode(directory / "limner.db")) == (0o700, 0o600)
    assert (directory / "limner.db").read_bytes() == b""
    (directory / "limner.db").write_bytes(b"kept")
    make_private(directory / "limner.db", create="file")
    assert (directory / "limner.db").read_bytes() == b"kept", "an existing file is never truncated"


@pytest.mark.usefixtures("umask_022")
def test_make_private_tightens_what_an_older_version_left_open(tmp_path: Path) -> None:
    directory = tmp_path / "data"
    directory.mkdir(mode=0o755)
    database = directory / "limner.db"
    database.write_bytes(b"")
    database.chmod(0o644)
    assert (_mode(directory), _mode(database)) == (0o755, 0o644)
    make_private(directory, create="directory")
    make_private(database)
    make_private(directory / "limner.db-wal")  # missing: nothing to do, no error
    assert (_mode(directory), _mode(database)) == (0o700, 0o600)
    assert not (directory / "limner.db-wal").exists()
