"""Milady: ``POST /api/v1/generate-image`` with ``prompt``, ``model``, ``aspectRatio`` and
``numImages`` (1-4), and a ``sourceImage`` data URL for image-to-image.

Each answer item has a permanent ``url`` (downloaded with the fetcher) or, when Milady's storage
failed, the image inline in ``image`` (a base64 data URL); its ``text`` becomes
``GeneratedImage.text``. Style presets are applied by limner before the call, so none is sent.
"Invalid model" answers mean the model is not offered there (``model_not_available``).
"""

from __future__ import annotations

from typing import Any

from limner.core.errors import ModelError
from limner.core.models import EngineRequest, GeneratedImage, Mode
from limner.engines.upstream.base import UpstreamEngine, hosted_capabilities
from limner.engines.upstream.payloads import data_url, encode_png
from limner.engines.upstream.shapes import nearest_ratio

RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21")
MAX_IMAGES = 4


class MiladyEngine(UpstreamEngine):
    provider = "milady"
    default_url = "https://cloud.milady.ai"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.capabilities = hosted_capabilities(
            modes=frozenset({Mode.GENERATE, Mode.EDIT}),
            max_images=MAX_IMAGES,
            max_input_images=1,
        )

    def is_unknown_model(self, status: int, payload: Any) -> bool:
        message = self.error_message(payload) or ""
        return super().is_unknown_model(status, payload) or message.startswith("Invalid model")

    async def _generate(self, request: EngineRequest) -> list[GeneratedImage]:
        body: dict[str, Any] = {
            "prompt": request.prompt,
            "model": self.model,
            "aspectRatio": nearest_ratio(request.width, request.height, RATIOS),
            "numImages": request.n,
        }
        if request.images:
            body["sourceImage"] = data_url(await encode_png(request.images[0]))
        payload = self.json(await self.send("POST", "/api/v1/generate-image", json=body))
        return self.expect_count([await self._image(item) for item in payload["images"]], request.n)

    async def _image(self, item: dict[str, Any]) -> GeneratedImage:
        text = item.get("text") or None
        url = item.get("url")
        if url:
            return GeneratedImage(image=await self.decode(await self.download(url)), text=text, source_url=url)
        if item.get("image"):
            return GeneratedImage(image=await self.decode_b64(item["image"]), text=text)
        raise ModelError("Provider 'milady' returned an image with neither url nor image.")
