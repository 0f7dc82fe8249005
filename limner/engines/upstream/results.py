"""What an upstream engine does with a provider's answer: result URLs downloaded through the SSRF-safe
``ImageFetcher``, images decoded within ``ImageDecoder``'s limits (a plain PNG left undecoded until something
needs its pixels), OpenAI-shaped ``data[]`` items read, counts checked, and one call per seed fanned out for
providers that make one image per call.

``ResultImages`` is a part of ``UpstreamEngine`` (``limner.engines.upstream.base``), which builds the fetcher
and decoder it uses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import httpx
from PIL import Image

from limner.core.errors import InvalidImage, ModelError
from limner.core.models import EngineRequest, GeneratedImage
from limner.engines.upstream.payloads import INLINE_BYTES
from limner.engines.upstream.usage import current_stats
from limner.media.encode import open_plain_png, remember_source
from limner.media.inputs import ImageDecoder, ImageFetcher, decode_base64, parse_data_url

log = logging.getLogger(__name__)


class ResultImages:
    """Reading a provider's images (see the module doc)."""

    provider: ClassVar[str]
    client: httpx.AsyncClient
    decoder: ImageDecoder
    fetcher: ImageFetcher

    async def download(self, url: str, label: str = "image") -> bytes:
        """A result image by URL (relative ones against the provider), with the fetcher's address checks."""
        current_stats.get().requests += 1
        absolute = str(self.client.base_url.join(url)) if not url.startswith(("http://", "https://")) else url
        try:
            return await self.fetcher.fetch(absolute, f"{self.provider} {label}")
        except InvalidImage as exc:
            log.warning("provider %s: %s", self.provider, exc.message)
            raise ModelError(f"Provider '{self.provider}' returned an image URL limner could not download.") from None

    async def decode(self, data: bytes, label: str = "image") -> Image.Image:
        try:
            if len(data) <= INLINE_BYTES:
                return self._open(data, label)
            # checking or decoding megabytes takes long enough to stall every other request
            return await asyncio.to_thread(self._open, data, label)
        except InvalidImage as exc:
            raise ModelError(f"Provider '{self.provider}' returned an invalid image ({exc.message}).") from None

    def _open(self, data: bytes, label: str) -> Image.Image:
        """The provider's image. A plain PNG stays undecoded until something needs its pixels: passed
        through as sent, it never does."""
        plain = open_plain_png(data, self.decoder.max_pixels) if len(data) <= self.decoder.max_bytes else None
        if plain is not None:
            return plain
        source = self.decoder.decode(data, label)
        # Delivered as sent when nothing needs changing (a PNG; any format that carries Content Credentials).
        remember_source(source.image, data)
        return source.image

    async def decode_b64(self, value: str, label: str = "image") -> Image.Image:
        """Base64 or a ``data:`` URL."""
        try:
            data = parse_data_url(value, label)[1] if value[:5].lower() == "data:" else decode_base64(value, label)
        except InvalidImage as exc:
            raise ModelError(f"Provider '{self.provider}' returned an invalid image ({exc.message}).") from None
        return await self.decode(data, label)

    async def openai_image(self, item: dict[str, Any]) -> GeneratedImage:
        """One OpenAI-shaped ``data[]`` item (OpenAI, AIGNE Hub): inline ``b64_json``, or a ``url`` to download."""
        if item.get("b64_json"):
            return GeneratedImage(image=await self.decode_b64(item["b64_json"]))
        url = item.get("url")
        if not url:
            raise ModelError(f"Provider '{self.provider}' returned an image with neither b64_json nor url.")
        return GeneratedImage(image=await self.decode(await self.download(url)), source_url=url)

    def expect_count(self, images: list[GeneratedImage], n: int) -> list[GeneratedImage]:
        """``images``, if there are as many as were asked for: a provider that returns fewer or more has failed."""
        if len(images) != n:
            raise ModelError(f"Provider '{self.provider}' returned {len(images)} images instead of {n}.")
        return images

    async def fan_out(
        self, request: EngineRequest, one: Callable[[int], Awaitable[GeneratedImage]]
    ) -> list[GeneratedImage]:
        """``one(seed)`` for every seed, concurrently; the first failure cancels the rest."""
        if request.n == 1:
            return [await one(request.seeds[0])]
        tasks = [asyncio.ensure_future(one(seed)) for seed in request.seeds]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
