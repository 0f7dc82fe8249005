from __future__ import annotations

import base64
import stat
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from limner.media.signing import UrlSigner, load_or_create_secret

SECRET = b"s" * 32
KEY = f"{'ab' * 32}.png"
NOW = 1_700_000_000


@pytest.fixture
def signer() -> UrlSigner:
    return UrlSigner(SECRET, default_ttl=600)


def test_valid_signature_verifies(signer: UrlSigner) -> None:
    expires, signature = signer.sign(KEY, NOW + 60)
    assert expires == NOW + 60
    assert signer.verify(KEY, expires, signature, now=NOW)
    assert signer.verify(KEY, str(expires), signature, now=NOW)  # as it arrives in a query string
    assert signer.verify(KEY, expires, signature, now=expires)  # valid up to and including the expiry second


def test_signature_is_urlsafe_base64_of_a_sha256_mac(signer: UrlSigner) -> None:
    _, signature = signer.sign(KEY, NOW)
    assert "=" not in signature and "+" not in signature and "/" not in signature
    assert len(base64.urlsafe_b64decode(signature + "=")) == 32


def test_default_expiry_uses_ttl(signer: UrlSigner) -> None:
    before = int(time.time())
    expires, signature = signer.sign(KEY)
    assert before + 600 <= expires <= int(time.time()) + 600
    assert signer.verify(KEY, expires, signature)


def test_expired_signature_fails(signer: UrlSigner) -> None:
    expires, signature = signer.sign(KEY, NOW)
    assert not signer.verify(KEY, expires, signature, now=NOW + 1)


def test_tampering_fails(signer: UrlSigner) -> None:
    expires, signature = signer.sign(KEY, NOW + 60)
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    assert not signer.verify(KEY, expires, flipped, now=NOW)
    assert not signer.verify(KEY, expires + 3600, signature, now=NOW)  # extending the expiry
    assert not signer.verify(f"{'cd' * 32}.png", expires, signature, now=NOW)  # another image
    assert not signer.verify(KEY, expires, "", now=NOW)
    assert not signer.verify(KEY, expires, "é" * 43, now=NOW)
    assert not signer.verify(KEY, "tomorrow", signature, now=NOW)


def test_other_secret_fails(signer: UrlSigner) -> None:
    expires, signature = UrlSigner(b"o" * 32).sign(KEY, NOW + 60)
    assert not signer.verify(KEY, expires, signature, now=NOW)


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        UrlSigner(b"short")


def test_path_for_carries_a_verifiable_signature(signer: UrlSigner) -> None:
    path = signer.path_for(KEY, NOW + 60)
    parts = urlsplit(path)
    query = parse_qs(parts.query)
    assert parts.path == f"/media/{KEY}"
    assert query["expires"] == [str(NOW + 60)]
    assert signer.verify(KEY, query["expires"][0], query["signature"][0], now=NOW)


def test_secret_is_created_once_with_private_mode(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    secret = load_or_create_secret(data_dir)
    path = data_dir / "signing.key"

    assert len(secret) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(data_dir) == secret
    assert [p.name for p in data_dir.iterdir()] == ["signing.key"]


def test_existing_secret_is_read(tmp_path: Path) -> None:
    (tmp_path / "signing.key").write_bytes(b"k" * 40)
    assert load_or_create_secret(tmp_path) == b"k" * 40


def test_too_short_secret_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "signing.key").write_bytes(b"k" * 4)
    with pytest.raises(ValueError, match="holds 4 bytes"):
        load_or_create_secret(tmp_path)
