"""Reading limner's own media links from the store, never over the network.

A link is ours when its signature verifies with our secret, whatever host it names (clients may reach
us by any name); a relative or ``public_url`` link that does not verify is refused, and any other URL
is left to the fetcher. ``ImageLoader`` asks here before it fetches anything.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from limner.core.errors import InvalidImage
from limner.media.signing import UrlSigner
from limner.media.store import MediaStore

MEDIA_PREFIX = "/media/"


class OwnMediaLinks:
    def __init__(self, signer: UrlSigner, store: MediaStore, public_url: str | None = None) -> None:
        self.signer = signer
        self.store = store
        self.public_url = public_url

    async def read(self, url: str) -> bytes | None:
        """The bytes behind one of our signed links; None for a URL that is not ours."""
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        key = parts.path.removeprefix(MEDIA_PREFIX)
        signed = parts.path.startswith(MEDIA_PREFIX) and self.signer.verify(
            key, query.get("expires", ["0"])[0], query.get("signature", [""])[0]
        )
        if signed:
            return await self.store.get(key)
        stored = self.store.key_in_url(url)  # the store's own presigned link (S3): read it, never fetch it
        if stored is not None:
            return await self.store.get(stored)
        if not parts.netloc or (self.public_url and url.startswith(self.public_url + "/")):
            raise InvalidImage("image link is invalid or has expired")
        return None
