"""HMAC-signed, expiring media URLs: anyone holding the URL may fetch the image until it expires.

The signature covers the key and the expiry, so neither can be changed without the secret. A failed
check is just ``False``: callers answer 403/404 without saying whether the key exists.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from pathlib import Path
from urllib.parse import urlencode

from limner.core.files import make_private, write_atomically

logger = logging.getLogger(__name__)

SECRET_FILE = "signing.key"
SECRET_BYTES = 32
MIN_SECRET_BYTES = 16
_DOMAIN = b"limner-media-v1"
"""Mixed into every MAC so a signature made for media can never be replayed as anything else."""


class UrlSigner:
    """Signs and verifies ``/media/{key}?expires=...&signature=...`` links."""

    def __init__(self, secret: bytes, default_ttl: int = 3600) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the URL signing secret must be at least {MIN_SECRET_BYTES} bytes")
        if default_ttl <= 0:
            raise ValueError("default_ttl must be positive")
        self._secret = secret
        self.default_ttl = default_ttl

    def _mac(self, key: str, expires: int) -> str:
        message = b"\n".join((_DOMAIN, key.encode(), str(expires).encode()))
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def sign(self, key: str, expires: int | None = None) -> tuple[int, str]:
        """Return ``(expires, signature)``; ``expires`` defaults to now + ``default_ttl`` (unix seconds)."""
        if expires is None:
            expires = int(time.time()) + self.default_ttl
        return expires, self._mac(key, expires)

    def verify(self, key: str, expires: int | str, signature: str, now: float | None = None) -> bool:
        """Whether ``signature`` was made by this secret for ``key`` and ``expires`` has not passed.

        ``expires`` may be the raw query-string value; anything unparsable is simply invalid.
        """
        try:
            expires_at = int(expires)
        except (TypeError, ValueError):
            return False
        if not isinstance(signature, str) or not signature.isascii():
            return False
        expected = self._mac(key, expires_at)
        # Compare before checking expiry so timing does not tell expired from forged.
        valid = hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii"))
        current = time.time() if now is None else now
        return valid and current <= expires_at

    def path_for(self, key: str, expires: int | None = None) -> str:
        """The server-relative signed path, e.g. ``/media/<key>?expires=...&signature=...``."""
        expires_at, signature = self.sign(key, expires)
        return f"/media/{key}?" + urlencode({"expires": expires_at, "signature": signature})


def load_or_create_secret(data_dir: Path) -> bytes:
    """Read ``data_dir/signing.key``, creating a random one (mode 0600) on first start.

    Creation is atomic and never overwrites: concurrent first starts all end up with the same secret.
    Replicas that serve each other's URLs must share this file (or configure the secret explicitly).
    """
    path = Path(data_dir) / SECRET_FILE
    if write_atomically(path, secrets.token_bytes(SECRET_BYTES), mode=0o600, overwrite=False):
        logger.info("created a new media signing secret in %s", path)
    make_private(path)  # one made by hand (or by an older version) may be open to others
    secret = path.read_bytes()
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"{path} holds {len(secret)} bytes; a signing secret needs at least {MIN_SECRET_BYTES}")
    return secret
