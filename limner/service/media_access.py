"""Who may read which stored image, and the signed links that hand images out.

Media belongs to the consumers who made it (the store records every owner of a content-addressed
key). Dialects name stored images in their own wire formats (AI.ML's backend media paths); they
translate those to a ``MediaRef`` and ask here, so ownership and signing live in one place.
"""

from __future__ import annotations

from limner.core.errors import NotFound
from limner.core.models import MediaRef
from limner.media.signing import UrlSigner
from limner.media.store import MediaStore, is_valid_key

PERMANENT_EXPIRY = 253_402_300_799
"""9999-12-31T23:59:59Z: the expiry a permanent link is signed with, so the signing scheme stays one."""


class MediaAccess:
    def __init__(self, store: MediaStore, signer: UrlSigner, *, direct_links: bool = False) -> None:
        self.store = store
        self.signer = signer
        self.direct_links = direct_links
        """Hand out the store's own links (S3 presigned URLs) instead of limner's signed ``/media`` links."""

    async def owned_key(self, consumer: str, ref: MediaRef) -> str:
        """The store key behind ``ref`` if ``consumer`` may read it; else 404, whether it does not exist, is not
        under that owner or belongs to someone else (a 403 would tell a caller which keys own which images)."""
        if not ref.owner or not is_valid_key(ref.key):
            raise NotFound("No such image.")
        try:
            owners = await self.store.owners(ref.key)
        except NotFound:
            owners = set()  # absent: the same answer, word for word, as someone else's
        if ref.owner not in owners or consumer not in owners:
            raise NotFound("No such image.")
        return ref.key

    async def read(self, consumer: str, ref: MediaRef) -> bytes:
        return await self.store.get(await self.owned_key(consumer, ref))

    async def signed_path(self, consumer: str, ref: MediaRef) -> str:
        """A presigned ``/media/...`` path to one of ``consumer``'s images (no auth needed until it expires)."""
        return self.signer.path_for(await self.owned_key(consumer, ref))

    def link(self, key: str, *, permanent: bool = False) -> str:
        """The signed ``/media/...`` path of a stored image; dialects make it absolute for their clients.

        ``permanent`` links carry no real expiry (``PERMANENT_EXPIRY``): they stay valid while the image is
        stored and the signing secret unchanged, for dialects that promise a permanent URL (Milady).
        With ``direct_links`` the store's own expiring link (an S3 presigned URL) is handed out instead,
        except for permanent links, which only limner's own signing can give."""
        direct = self.store.presigned_url(key) if self.direct_links and not permanent else None
        return direct or self.signer.path_for(key, PERMANENT_EXPIRY if permanent else None)
