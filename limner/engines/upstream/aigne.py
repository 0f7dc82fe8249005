"""AIGNE Hub: ``POST /api/images/generations``, OpenAI-shaped, answering ``data[].url`` or
``data[].b64_json`` (option ``response_format``, ``b64_json`` by default).

Edits send the source images in ``image`` (a base64 data URL, or a list of them). ``quality`` and
``style`` are passed on when the client gave them (DALL-E 3 behind the hub uses them). The hub is
self-hosted, so ``provider_url`` is required.
"""

from __future__ import annotations

from typing import Any

from limner.core.models import EngineRequest, GeneratedImage, Mode
from limner.engines.upstream.base import UpstreamEngine, hosted_capabilities
from limner.engines.upstream.payloads import data_url, encode_png


class AigneEngine(UpstreamEngine):
    provider = "aigne"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.response_format = self.entry.options.response_format or "b64_json"
        self.capabilities = hosted_capabilities(
            modes=frozenset({Mode.GENERATE, Mode.EDIT, Mode.COMPOSE}),
            max_images=10,
            max_input_images=16,
        )

    async def _generate(self, request: EngineRequest) -> list[GeneratedImage]:
        body: dict[str, Any] = {
            "prompt": request.prompt,
            "model": self.model,
            "n": request.n,
            "size": f"{request.width}x{request.height}",
            "response_format": self.response_format,
        }
        refs = [data_url(await encode_png(image)) for image in request.images]
        if refs:
            body["image"] = refs[0] if len(refs) == 1 else refs
        if request.quality:
            body["quality"] = request.quality
        if request.rendering_style:
            body["style"] = request.rendering_style
        payload = self.json(await self.send("POST", "/api/images/generations", json=body))
        return self.expect_count([await self.openai_image(item) for item in payload["data"]], request.n)
