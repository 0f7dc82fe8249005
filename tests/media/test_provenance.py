"""Content Credentials: manifests signed with the C2PA library, checked with its reader (signature, hard
binding, ingredients), and the certificates limner refuses to start with."""

from __future__ import annotations

import datetime
import io
import json
from pathlib import Path

import c2pa
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from PIL import Image

from limner import __version__
from limner.media.provenance import (
    DEV_CHAIN_FILE,
    DEV_KEY_FILE,
    ContentCredentials,
    Ingredient,
    Made,
    ProvenanceError,
    load_credentials,
    read,
    signed_format,
)

UNTRUSTED = ["signingCredential.untrusted"]
"""The one failure a development certificate leaves: validators do not know its CA."""


def encoded(fmt: str = "PNG", color: tuple[int, int, int] = (200, 40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), color).save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> ContentCredentials:
    return load_credentials(tmp_path_factory.mktemp("c2pa"))


@pytest.mark.parametrize(("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
def test_a_made_image_says_who_made_it_and_how(credentials: ContentCredentials, fmt: str, mime: str) -> None:
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    signed = credentials.sign(encoded(fmt), mime, Made(model="limner-emoji-32"))
    report = read(signed, mime)
    assert report.source_types == ["trainedAlgorithmicMedia"] and report.signer_name == "limner development signer"
    assert report.when is not None
    assert before <= datetime.datetime.fromisoformat(report.when) <= datetime.datetime.now(datetime.UTC)
    assert report.present and report.state == "Valid" and report.failures == UNTRUSTED
    assert report.generator == f"limner/{__version__}"
    assert report.actions == ["c2pa.created"] and report.agents == ["limner-emoji-32"]
    assert report.signer is not None and "untrusted" in report.signer
    assert signed_format(signed) == mime and signed_format(encoded(fmt)) is None
    assert Image.open(io.BytesIO(signed)).size == (96, 64), "still the same picture"
    with c2pa.Reader(mime, io.BytesIO(signed)) as reader:
        actions = json.dumps(reader.get_active_manifest())
    assert "trainedAlgorithmicMedia" in actions
    assert "prompt" not in actions and "description" not in actions, "no prompt unless the operator asks"


def test_one_flipped_byte_breaks_the_binding(credentials: ContentCredentials) -> None:
    signed = bytearray(credentials.sign(encoded("JPEG"), "image/jpeg", Made(model="m")))
    signed[len(signed) - 200] ^= 0x01  # inside the image data, after the manifest
    report = read(bytes(signed), "image/jpeg")
    assert report.state == "Invalid" and any("mismatch" in code for code in report.failures), report.failures


def test_an_edit_lists_its_inputs_and_keeps_their_own_credentials(credentials: ContentCredentials) -> None:
    signed_input = credentials.sign(encoded("PNG", (0, 0, 250)), "image/png", Made(model="elsewhere"))
    plain_input = encoded("JPEG", (0, 250, 0))
    made = Made(
        model="sdxl",
        ingredients=[
            Ingredient(signed_input, "image/png", "image 1"),
            Ingredient(plain_input, "image/jpeg", "image 2"),
        ],
        prompt="make it red",
    )
    result = credentials.sign(encoded(), "image/png", made)
    report = read(result, "image/png")
    assert report.state == "Valid" and report.failures == UNTRUSTED
    assert report.actions == ["c2pa.opened", "c2pa.placed", "c2pa.edited"]
    assert report.ingredients == ["image 1", "image 2"]
    with c2pa.Reader("image/png", io.BytesIO(result)) as reader:
        store = json.loads(reader.json())
    assert len(store["manifests"]) == 2, "the signed input's own manifest travels inside its ingredient"
    assert "make it red" in json.dumps(store), "the prompt, when the operator asks for it"


def test_the_development_chain_is_made_once_and_its_key_is_private(tmp_path: Path) -> None:
    load_credentials(tmp_path)
    chain, key = (tmp_path / DEV_CHAIN_FILE).read_bytes(), tmp_path / DEV_KEY_FILE
    assert key.stat().st_mode & 0o777 == 0o600
    again = load_credentials(tmp_path)
    assert (tmp_path / DEV_CHAIN_FILE).read_bytes() == chain and again.untrusted


def certificate(*, days: int, key: ec.EllipticCurvePrivateKey | None = None) -> tuple[bytes, bytes]:
    """A self-issued signer certificate valid for ``days`` from yesterday (negative: already expired)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "operator")])
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=400)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=400 + days))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), pem


def test_unusable_certificates_are_refused_with_what_is_wrong(tmp_path: Path) -> None:
    expired_cert, expired_key = certificate(days=-3)
    (tmp_path / "expired.pem").write_bytes(expired_cert)
    (tmp_path / "expired.key").write_bytes(expired_key)
    with pytest.raises(ProvenanceError, match=r"the C2PA certificate 'CN=operator' expired on \d{4}-\d\d-\d\d"):
        load_credentials(tmp_path, cert=tmp_path / "expired.pem", key=tmp_path / "expired.key")
    good_cert, _ = certificate(days=30)
    (tmp_path / "good.pem").write_bytes(good_cert)
    with pytest.raises(ProvenanceError, match="does not belong to the first certificate"):
        load_credentials(tmp_path, cert=tmp_path / "good.pem", key=tmp_path / "expired.key")
    with pytest.raises(ProvenanceError, match="LIMNER_C2PA_KEY is not"):
        load_credentials(tmp_path, cert=tmp_path / "good.pem")
    with pytest.raises(ProvenanceError, match="cannot read the C2PA certificate chain"):
        load_credentials(tmp_path, cert=tmp_path / "missing.pem", key=tmp_path / "expired.key")
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ProvenanceError, match="not PEM certificates"):
        load_credentials(tmp_path, cert=tmp_path / "junk.pem", key=tmp_path / "expired.key")
