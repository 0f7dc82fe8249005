"""The store stage: a request's encoded images in the media store, all of them or none.

Stored media is content-addressed and shared: two consumers who make the same bytes own one object.
A failed store therefore withdraws only the claims this request added; an object someone else owns
stays, with that owner's claim."""

from __future__ import annotations

import logging

from limner.core.errors import NotFound
from limner.core.models import ImageRequest, StoredImage
from limner.media.store import content_key
from limner.service.media_access import MediaAccess
from limner.service.stages.finish import Encoded

log = logging.getLogger(__name__)


class StoreStage:
    def __init__(self, media: MediaAccess) -> None:
        self.media = media

    async def run(self, encoded: list[Encoded], request: ImageRequest) -> tuple[list[StoredImage], str | None]:
        """Every image stored (inline answers and a provider's own URLs are not); a failure stores none and
        says why in the second value, and the images still go back inline."""
        keys: list[str] = []
        claimed: list[str] = []
        storage_error = None
        try:
            for one in encoded:
                linked = request.links and not one.item.source_url
                keys.append(await self._put(one, request.consumer, claimed) if linked else "")
        except Exception as exc:
            log.exception("storing images failed")
            storage_error = f"{type(exc).__name__}: could not store the image"
            await self._withdraw(claimed, request.consumer)
            keys = []
        return [self._stored(one, keys[index] if keys else "", request) for index, one in enumerate(encoded)], (
            storage_error
        )

    async def _put(self, one: Encoded, owner: str, claimed: list[str]) -> str:
        store = self.media.store
        try:
            owned = owner in await store.owners(content_key(one.data, one.mime_type))
        except NotFound:
            owned = False
        key = await store.put(one.data, mime_type=one.mime_type, owner=owner)
        if not owned:
            claimed.append(key)
        return key

    async def _withdraw(self, claimed: list[str], owner: str) -> None:
        for key in claimed:
            try:
                await self.media.store.delete(key, owner=owner)
            except Exception:
                log.exception("cleaning up %s failed", key)

    def _stored(self, one: Encoded, key: str, request: ImageRequest) -> StoredImage:
        item = one.item
        url = item.source_url or (self.media.link(key, permanent=request.permanent_links) if key else "")
        return StoredImage(
            key=key,
            url=url,
            data=one.data,
            mime_type=one.mime_type,
            width=item.image.width,
            height=item.image.height,
            seed=item.seed,
            text=item.text,
        )
