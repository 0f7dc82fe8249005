"""AI.ML: ``POST /v1/generation/images``, then (for ``response_format="url"``, the reference's flow)
an authorized ``GET`` of the returned backend media path ``/v1/media/images/<path-encoded>``, which
answers ``{"url": <presigned URL>}``, then a download of that URL without credentials.

``response_format`` (option) may also be ``presigned_url`` (download the returned URL at once) or
``b64_json`` (the image inline). Source images go in ``image`` as base64 data URLs, one for an edit
and a list for a composition, in order ("image 1" first). The answer holds one image, so ``n``
images are ``n`` concurrent requests. The size goes as ``WIDTHxHEIGHT``.
"""

from __future__ import annotations

from typing import Any

from limner.core.errors import ModelError
from limner.core.models import EngineRequest, GeneratedImage, Mode
from limner.engines.upstream.base import UpstreamEngine, hosted_capabilities
from limner.engines.upstream.payloads import data_url, encode_png

RESPONSE_FORMATS = ("url", "presigned_url", "b64_json")
MEDIA_PREFIX = "/v1/media/images/"


class AimlEngine(UpstreamEngine):
    provider = "aiml"
    default_url = "https://api.ai.ml"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.response_format = self.entry.options.response_format or "url"
        if self.response_format not in RESPONSE_FORMATS:
            raise ValueError(f"model '{self.entry.id}': response_format must be one of {', '.join(RESPONSE_FORMATS)}")
        self.capabilities = hosted_capabilities(
            modes=frozenset({Mode.GENERATE, Mode.EDIT, Mode.COMPOSE}),
            max_images=10,
            max_input_images=10,
            default_size=(2048, 2048),
        )

    async def _generate(self, request: EngineRequest) -> list[GeneratedImage]:
        refs = [data_url(await encode_png(image)) for image in request.images]
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": request.prompt,
            "sequential_image_generation": "disabled",
            "response_format": self.response_format,
            "size": f"{request.width}x{request.height}",
            "stream": False,
            "watermark": False,
        }
        if refs:
            body["image"] = refs[0] if len(refs) == 1 else refs

        async def one(seed: int) -> GeneratedImage:
            return await self._one(body)

        return await self.fan_out(request, one)

    async def _one(self, body: dict[str, Any]) -> GeneratedImage:
        payload = self.json(await self.send("POST", "/v1/generation/images", json=body))
        item = payload["data"]["image"]
        if self.response_format == "b64_json":
            return GeneratedImage(image=await self.decode_b64(item["b64_json"]))
        url = item.get("url")
        if not isinstance(url, str) or not url:
            raise ModelError("Provider 'aiml' returned no image URL.")
        if self.response_format == "url":
            url = await self._resolve(url)
        return GeneratedImage(image=await self.decode(await self.download(url)), source_url=url)

    async def _resolve(self, backend_url: str) -> str:
        """Exchange a backend media path for its presigned URL (an authorized request to AI.ML itself)."""
        if not self.trusts(backend_url):
            raise ModelError("Provider 'aiml' returned a media URL on another host.")
        presigned = self.json(await self.send("GET", backend_url)).get("url")
        if not isinstance(presigned, str) or not presigned:
            raise ModelError("Provider 'aiml' resolved the image to no URL.")
        return presigned
