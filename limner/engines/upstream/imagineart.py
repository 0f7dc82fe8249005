"""ImagineArt 2.0: multipart ``POST /v1/images/generations`` (text) or ``/v1/images/edits`` (1-4
``images`` files), each answering the PNG itself.

The endpoint picks the model (``text-to-image`` / ``image-edit``), so ``upstream_model`` is not sent.
Sizes go as the nearest ``aspect_ratio`` and a ``resolution`` of 1K or 2K; seeds are sent (0 would
mean random there, so the ``X-Seed`` answer header, when present, is what is reported).
``reasoning`` is ``high`` for high-effort requests (the ImagineArt dialect's ``reasoning=high``), else ``low``.
"""

from __future__ import annotations

from typing import Any

from limner.core.errors import ModelError
from limner.core.imagineart import EDIT_RATIOS, GENERATE_RATIOS
from limner.core.models import EngineRequest, GeneratedImage, Mode
from limner.engines.upstream.base import UpstreamEngine, hosted_capabilities
from limner.engines.upstream.payloads import encode_png
from limner.engines.upstream.shapes import nearest_ratio, resolution_preset

MAX_IMAGES = 4

Files = list[tuple[str, tuple[str | None, bytes, str] | tuple[None, str]]]


class ImagineArtEngine(UpstreamEngine):
    provider = "imagineart"
    default_url = "https://api.ml.imagine.art"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.capabilities = hosted_capabilities(
            modes=frozenset({Mode.GENERATE, Mode.EDIT, Mode.COMPOSE}),
            max_images=10,
            max_input_images=MAX_IMAGES,
            supports_seed=True,
            default_size=(2048, 2048),
        )

    async def _generate(self, request: EngineRequest) -> list[GeneratedImage]:
        uploads = [await encode_png(image) for image in request.images]

        async def one(seed: int) -> GeneratedImage:
            return await self._one(request, uploads, seed)

        return await self.fan_out(request, one)

    async def _one(self, request: EngineRequest, uploads: list[bytes], seed: int) -> GeneratedImage:
        editing = request.mode is not Mode.GENERATE
        ratios = EDIT_RATIOS if editing else GENERATE_RATIOS
        fields = {
            "prompt": request.prompt,
            "aspect_ratio": nearest_ratio(request.width, request.height, ratios),
            "resolution": resolution_preset(request.width, request.height),
            "seed": str(seed),
        }
        if not editing:
            fields["reasoning"] = "high" if request.effort == "high" else "low"
        # Fields as file-less parts: httpx sends multipart only when there are parts, and the
        # reference takes multipart/form-data for generations too.
        files: Files = [(name, (None, value)) for name, value in fields.items()]
        files += [("images", (f"image-{index}.png", data, "image/png")) for index, data in enumerate(uploads, 1)]
        path = "/v1/images/edits" if editing else "/v1/images/generations"
        response = await self.send("POST", path, files=files, headers={"Accept": "image/png"})
        content_type = response.headers.get("content-type", "")
        if not content_type.startswith("image/"):
            raise ModelError(f"Provider 'imagineart' answered {content_type or 'no content type'} instead of an image.")
        reported = response.headers.get("x-seed", "")
        return GeneratedImage(
            image=await self.decode(response.content), seed=int(reported) if reported.isdigit() else seed
        )
