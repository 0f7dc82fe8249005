"""Content Credentials: a signed C2PA manifest on every image limner makes, with the CAI's own library.

Each manifest says who made the image (claim generator ``limner/<version>``), that it is AI-generated
(``c2pa.created`` with digital source type ``trainedAlgorithmicMedia``, the model as software agent) or,
for edits, which images it was made from (``c2pa.opened`` per input, their own manifests kept inside their
ingredients, then ``c2pa.edited``). It is bound to the image's bytes (a hard binding), so changing one byte
breaks it. The prompt is left out unless the operator asks (``include_prompt``).

Signing uses the operator's certificate chain and private key (the algorithm follows the key), or a
development chain made on first start in the data directory, named untrusted: validators show such an
image as validly signed by an unknown signer. No thumbnail is embedded: the manifest adds about 3 KB.

The library never goes to the network here (``OFFLINE``): an image may name a remote manifest in its XMP,
and the library would fetch that URL while reading it or taking it as an ingredient; so would OCSP checks
of a certificate the image carries. Every reader and builder in limner uses ``offline_context``.
"""

from __future__ import annotations

import datetime
import functools
import importlib
import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import c2pa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from limner import __version__
from limner.core.files import write_atomically

log = logging.getLogger(__name__)

TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
DEV_CHAIN_FILE = "c2pa-dev-untrusted-chain.pem"
DEV_KEY_FILE = "c2pa-dev-untrusted-key.pem"
DEV_ORGANIZATION = "limner development certificate (untrusted)"
SIGNED_FORMATS = ("image/png", "image/jpeg", "image/webp")
OFFLINE: dict[str, Any] = {
    "core": {"allowed_network_hosts": [], "max_decompressed_manifest_size_in_mb": 16},
    "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
}
"""C2PA library settings that keep it off the network (see the module doc), and a compressed manifest from
inflating past 16 MB."""
RemoteSign = Callable[[bytes], bytes]
"""Signs the bytes it is given with the key of the configured certificate (an HSM or KMS): raw signature back."""


class ProvenanceError(ValueError):
    """The signing certificate or key cannot be used; the message says what is wrong."""


@dataclass(frozen=True)
class Ingredient:
    """An image a result was made from: its bytes (its own manifest, if any, is kept) and what to call it."""

    data: bytes
    mime_type: str
    title: str


@dataclass(frozen=True)
class Made:
    """What a manifest records of how one image was made."""

    model: str
    ingredients: Sequence[Ingredient] = ()
    """What it was made from: the first is opened and edited (the parent), the others placed in it."""
    prompt: str | None = None


class ContentCredentials:
    """Signs encoded images with one certificate chain; safe to call from several threads."""

    def __init__(self, chain_pem: bytes, *, key_pem: bytes | None = None, remote: RemoteSign | None = None) -> None:
        certificates = _certificates(chain_pem)
        public_key = certificates[0].public_key()
        self.algorithm = _algorithm(public_key)
        self.subject = certificates[0].subject.rfc4514_string()
        self.untrusted = DEV_ORGANIZATION in self.subject
        if remote is not None:
            self._signer = c2pa.Signer.from_callback(
                remote, getattr(c2pa.C2paSigningAlg, self.algorithm.upper()), chain_pem.decode()
            )
        elif key_pem is not None:
            _check_key(key_pem, public_key)
            info = c2pa.C2paSignerInfo(
                alg=self.algorithm.encode(), sign_cert=chain_pem, private_key=key_pem, ta_url=None
            )
            self._signer = c2pa.Signer.from_info(info)
        else:
            raise ProvenanceError("a C2PA signer needs the certificate's private key or a remote signer")
        self._context = c2pa.Context.from_dict({**OFFLINE, "builder": {"thumbnail": {"enabled": False}}})

    def sign(self, data: bytes, mime_type: str, made: Made) -> bytes:
        """``data`` with a signed manifest saying how it was made; formats C2PA cannot carry come back as they are.
        ``ProvenanceError`` when the library refuses (the image is then not delivered unsigned)."""
        if mime_type not in SIGNED_FORMATS:
            return data
        try:
            with c2pa.Builder(_manifest(made), context=self._context) as builder:
                for index, ingredient in enumerate(made.ingredients):
                    details = {
                        "title": ingredient.title,
                        "relationship": "parentOf" if index == 0 else "componentOf",
                        "instance_id": _ingredient_id(index),
                    }
                    builder.add_ingredient(details, ingredient.mime_type, io.BytesIO(ingredient.data))
                signed = io.BytesIO()
                builder.sign(self._signer, mime_type, io.BytesIO(data), signed)
        except c2pa.C2paError as exc:
            raise ProvenanceError(f"the C2PA library could not sign the image: {exc}") from exc
        return signed.getvalue()


@functools.cache
def offline_context() -> c2pa.Context:
    """One library context for every reader: ``OFFLINE`` (shared, as the signer's is, between threads)."""
    return c2pa.Context.from_dict(OFFLINE)


def _ingredient_id(index: int) -> str:
    return f"limner-ingredient-{index + 1}"


def _manifest(made: Made) -> dict[str, Any]:
    """The actions: ``c2pa.created`` from nothing; else the parent opened, the other inputs placed, then edited."""
    made_here = {"digitalSourceType": TRAINED_ALGORITHMIC_MEDIA, "softwareAgent": {"name": made.model}}
    actions: list[dict[str, Any]] = []
    for index, _ in enumerate(made.ingredients):
        action = "c2pa.opened" if index == 0 else "c2pa.placed"
        actions.append({"action": action, "parameters": {"ingredientIds": [_ingredient_id(index)]}})
    when = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    actions.append({"action": "c2pa.edited" if made.ingredients else "c2pa.created", "when": when, **made_here})
    if made.prompt is not None:
        actions[-1]["parameters"] = {"description": made.prompt}
    return {
        "claim_generator_info": [{"name": "limner", "version": __version__}],
        "assertions": [{"label": "c2pa.actions", "data": {"actions": actions}}],
    }


@dataclass(frozen=True)
class Report:
    """What ``limner provenance check`` tells of one file."""

    present: bool
    state: str | None = None
    """``Valid`` (signature and binding hold, signer not on a trust list), ``Trusted``, or ``Invalid``."""
    signer: str | None = None
    """The signing certificate's issuer (its organisation); ``signer_name`` is its common name."""
    signer_name: str | None = None
    when: str | None = None
    """When it was made: the signing time from a time-stamp authority, else the time its last action names."""
    generator: str | None = None
    actions: list[str] = field(default_factory=list)
    agents: list[str] = field(default_factory=list)
    source_types: list[str] = field(default_factory=list)
    """Digital source types the actions name, short (``trainedAlgorithmicMedia``: made by a model)."""
    ingredients: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def read(data: bytes, mime_type: str) -> Report:
    """The active manifest of ``data``, checked: signature, hard binding and ingredients."""
    try:
        reader = c2pa.Reader(mime_type, io.BytesIO(data), context=offline_context())
    except c2pa.C2paError:
        return Report(present=False)
    with reader:
        manifest = reader.get_active_manifest() or {}
        results = reader.get_validation_results() or {}
        state = reader.get_validation_state()
    actions = [
        action
        for assertion in manifest.get("assertions", [])
        if str(assertion.get("label", "")).startswith("c2pa.actions")
        for action in assertion.get("data", {}).get("actions", [])
    ]
    failures = [item.get("code", "") for item in results.get("activeManifest", {}).get("failure", [])]
    generator: dict[str, Any] = next(iter(manifest.get("claim_generator_info", [])), {})
    signature: dict[str, Any] = manifest.get("signature_info") or {}
    times = [str(action["when"]) for action in actions if action.get("when")]
    sources = [str(action["digitalSourceType"]) for action in actions if action.get("digitalSourceType")]
    return Report(
        present=True,
        state=state,
        signer=signature.get("issuer"),
        signer_name=signature.get("common_name"),
        when=signature.get("time") or (times[-1] if times else None),
        generator=f"{generator.get('name')}/{generator.get('version')}" if generator else None,
        actions=[str(action.get("action")) for action in actions],
        agents=[
            str((action.get("softwareAgent") or {}).get("name")) for action in actions if action.get("softwareAgent")
        ],
        source_types=list(dict.fromkeys(source.rsplit("/", 1)[-1] for source in sources)),
        ingredients=[str(item.get("title")) for item in manifest.get("ingredients", [])],
        failures=failures,
    )


_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))


def image_format(data: bytes) -> str | None:
    """The MIME type of a PNG, JPEG or WebP file by its first bytes (the formats that carry credentials)."""
    mime_type = next((mime for magic, mime in _MAGIC if data.startswith(magic)), None)
    if mime_type is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        mime_type = "image/webp"
    return mime_type


def signed_format(data: bytes) -> str | None:
    """The MIME type of ``data`` when it carries Content Credentials (valid or not), else None: such bytes
    are never altered in passing. A cheap look for the JUMBF label first, the library's reader to be sure."""
    if b"c2pa" not in data:
        return None
    mime_type = image_format(data)
    if mime_type is None:
        return None
    try:
        with c2pa.Reader(mime_type, io.BytesIO(data), context=offline_context()):
            return mime_type
    except c2pa.C2paError:
        return None


def load_credentials(
    data_dir: Path, *, cert: Path | None = None, key: Path | None = None, remote: str | None = None
) -> ContentCredentials:
    """The operator's chain and key (or remote signer ``module:function``), else the development chain in
    ``data_dir``, made on first start. ``ProvenanceError`` says what is wrong with a configured one."""
    if cert is None:
        if key is not None or remote is not None:
            raise ProvenanceError(
                "LIMNER_C2PA_KEY and LIMNER_C2PA_SIGNER need LIMNER_C2PA_CERT (the certificate chain)"
            )
        cert, key = development_chain(data_dir)
    chain = _read(cert, "certificate chain")
    if remote is not None:
        return ContentCredentials(chain, remote=_remote(remote))
    if key is None:
        raise ProvenanceError(f"LIMNER_C2PA_CERT is set ({cert}) but LIMNER_C2PA_KEY is not: set the private key")
    return ContentCredentials(chain, key_pem=_read(key, "private key"))


def development_chain(data_dir: Path) -> tuple[Path, Path]:
    """A development CA and signer certificate in ``data_dir`` (the key mode 0600), made once: signs from the
    first image, and says in its name that no validator trusts it."""
    chain_path, key_path = data_dir / DEV_CHAIN_FILE, data_dir / DEV_KEY_FILE
    if chain_path.exists() and key_path.exists():
        chain = _certificates(chain_path.read_bytes())
        if chain[0].not_valid_after_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30):
            return chain_path, key_path
    chain_pem, key_pem = _make_development_chain()
    write_atomically(key_path, key_pem, mode=0o600)
    write_atomically(chain_path, chain_pem, mode=0o644)
    log.info(
        "made an untrusted development C2PA certificate in %s; set LIMNER_C2PA_CERT/KEY for a real one", chain_path
    )
    return chain_path, key_path


def _make_development_chain() -> tuple[bytes, bytes]:
    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, DEV_ORGANIZATION),
                x509.NameAttribute(NameOID.COMMON_NAME, common),
            ]
        )

    def usage(*, sign: bool, certify: bool) -> x509.KeyUsage:
        return x509.KeyUsage(sign, False, False, False, False, certify, certify, False, False)

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("limner development CA"))
        .issuer_name(name("limner development CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage(sign=False, certify=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name("limner development signer"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(sign=True, certify=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    chain = leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return chain, private


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ProvenanceError(f"cannot read the C2PA {what} {path}: {exc.strerror or exc}") from None


def _certificates(chain_pem: bytes) -> list[x509.Certificate]:
    """The chain, signer first; refused when unreadable, not yet valid or expired."""
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise ProvenanceError(f"the C2PA certificate chain is not PEM certificates: {exc}") from None
    now = datetime.datetime.now(datetime.UTC)
    for certificate in chain:
        subject = certificate.subject.rfc4514_string()
        if certificate.not_valid_after_utc <= now:
            raise ProvenanceError(
                f"the C2PA certificate '{subject}' expired on {certificate.not_valid_after_utc:%Y-%m-%d}"
            )
        if certificate.not_valid_before_utc > now:
            raise ProvenanceError(
                f"the C2PA certificate '{subject}' is not valid before {certificate.not_valid_before_utc:%Y-%m-%d}"
            )
    return chain


def _algorithm(public_key: Any) -> str:
    """The C2PA signing algorithm the signer's key makes: ES256/384/512 by curve, PS256 for RSA, Ed25519."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        by_curve = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
        if public_key.curve.name not in by_curve:
            raise ProvenanceError(
                f"C2PA cannot sign with the EC curve {public_key.curve.name}: use P-256, P-384 or P-521"
            )
        return by_curve[public_key.curve.name]
    if isinstance(public_key, rsa.RSAPublicKey):
        return "ps256"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "ed25519"
    raise ProvenanceError(f"C2PA cannot sign with a {type(public_key).__name__}: use an EC, RSA or Ed25519 key")


def _check_key(key_pem: bytes, public_key: Any) -> None:
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ProvenanceError(f"the C2PA private key is not an unencrypted PEM key: {exc}") from None
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*raw) != public_key.public_bytes(*raw):
        raise ProvenanceError("the C2PA private key does not belong to the first certificate of the chain")


def _remote(target: str) -> RemoteSign:
    module, _, name = target.partition(":")
    try:
        sign = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ProvenanceError(f"LIMNER_C2PA_SIGNER={target!r} names no function (module:function): {exc}") from None
    if not callable(sign):
        raise ProvenanceError(f"LIMNER_C2PA_SIGNER={target!r} is not a function")
    return sign  # type: ignore[no-any-return]


def describe(report: Report) -> str:
    """A report as ``limner provenance check`` prints it."""
    if not report.present:
        return "no Content Credentials (no C2PA manifest)"
    lines = [
        f"Content Credentials: {report.state}"
        + (f" (failures: {', '.join(report.failures)})" if report.failures else ""),
        f"signed by: {report.signer or 'unknown'}" + (f" ({report.signer_name})" if report.signer_name else ""),
        f"made at: {report.when or 'unknown'}",
        f"made with: {report.generator or 'unknown'}",
        f"actions: {', '.join(report.actions) or 'none'}",
    ]
    if report.source_types:
        lines.append(f"digital source type: {', '.join(report.source_types)}")
    if report.agents:
        lines.append(f"software agents: {', '.join(dict.fromkeys(report.agents))}")
    if report.ingredients:
        lines.append(f"ingredients: {', '.join(report.ingredients)}")
    return "\n".join(lines)
