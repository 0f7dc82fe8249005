"""Who may read which stored image, and the signed links that hand images out.

Media belongs to the consumers who made it (the store records every owner of a content-addressed
key). Dialects name stored images in their own wire formats (AI.ML's backend media paths); they
translate those to a ``MediaRef`` and ask here, so ownership and signing live in one place.
"""

from __future__ import annotations

from limner.core.errors import Forbidden, NotFound
from limner.core.models import MediaRef
from limner.media.signing import UrlSigner
from limner.media.store import MediaStore, is_valid_key


class MediaAccess:
    def __init__(self, store: MediaStore, signer: UrlSigner) -> None:
        self.store = store
        self.signer = signer

    async def owned_key(self, consumer: str, ref: MediaRef) -> str:
        """The store key behind ``ref`` if ``consumer`` may read it: 404 when it does not exist (or not
        under that owner), 403 when it belongs to someone else."""
        if not ref.owner or not is_valid_key(ref.key):
            raise NotFound("No such image.")
        owners = await self.store.owners(ref.key)  # NotFound when absent
        if ref.owner not in owners:
            raise NotFound("No such image.")
        if consumer not in owners:
            raise Forbidden("This image belongs to another consumer.")
        return ref.key

    async def read(self, consumer: str, ref: MediaRef) -> bytes:
        return await self.store.get(await self.owned_key(consumer, ref))

    async def signed_path(self, consumer: str, ref: MediaRef) -> str:
        """A presigned ``/media/...`` path to one of ``consumer``'s images (no auth needed until it expires)."""
        return self.signer.path_for(await self.owned_key(consumer, ref))

    def link(self, key: str) -> str:
        """The signed ``/media/...`` path of a stored image; dialects make it absolute for their clients."""
        return self.signer.path_for(key)
