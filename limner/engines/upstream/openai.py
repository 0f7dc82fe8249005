"""OpenAI Images: ``POST /images/generations`` (JSON), ``/images/edits`` and ``/images/variations``
(multipart), answering ``data[].b64_json`` or ``data[].url``.

The model families take different parameters, and the engine follows each rather than letting the
provider refuse:

=============== ============================== ===== ============================================
family          sizes                          n     other
=============== ============================== ===== ============================================
``dall-e-2``    256, 512, 1024 squares         1-10  edits (one image, mask), variations,
                                                     ``response_format``
``dall-e-3``    1024x1024, 1792x1024, 1024x1792 1    n calls made concurrently; ``quality``
                                                     standard|hd, ``style``; ``response_format``
``gpt-image-*`` 1024x1024, 1536x1024, 1024x1536 1-10  edits of up to 16 images with a mask; base64
                                                     only; ``output_format``, ``background``,
                                                     ``quality`` low|medium|high|auto
=============== ============================== ===== ============================================

Any other model name is treated as ``gpt-image`` (OpenAI's current family). ``response_format``
(option, ``b64_json`` by default) picks how DALL-E answers; URLs are downloaded with the fetcher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from limner.core.models import EngineRequest, GeneratedImage, Mode
from limner.engines.upstream.base import UpstreamEngine, hosted_capabilities
from limner.engines.upstream.payloads import encode_png
from limner.engines.upstream.shapes import nearest_size


@dataclass(frozen=True)
class Family:
    sizes: tuple[tuple[int, int], ...]
    modes: frozenset[Mode]
    per_call: int
    """Images one request may ask for; more are made by several concurrent requests."""
    max_inputs: int
    response_format: bool
    """Whether the family takes ``response_format`` (the gpt-image models always answer base64)."""
    qualities: dict[str, str]
    """limner/dialect quality words -> this family's."""


DALL_E_2 = Family(
    sizes=((256, 256), (512, 512), (1024, 1024)),
    modes=frozenset({Mode.GENERATE, Mode.EDIT, Mode.VARIATION}),
    per_call=10,
    max_inputs=1,
    response_format=True,
    qualities={},
)
DALL_E_3 = Family(
    sizes=((1024, 1024), (1792, 1024), (1024, 1792)),
    modes=frozenset({Mode.GENERATE}),
    per_call=1,
    max_inputs=0,
    response_format=True,
    qualities={"standard": "standard", "hd": "hd", "high": "hd", "medium": "standard", "low": "standard"},
)
GPT_IMAGE = Family(
    sizes=((1024, 1024), (1536, 1024), (1024, 1536)),
    modes=frozenset({Mode.GENERATE, Mode.EDIT, Mode.COMPOSE}),
    per_call=10,
    max_inputs=16,
    response_format=False,
    qualities={"low": "low", "medium": "medium", "high": "high", "auto": "auto", "hd": "high", "standard": "auto"},
)
BACKGROUNDS = ("transparent", "opaque", "auto")


def family_for(model: str) -> Family:
    if model.startswith("dall-e-2"):
        return DALL_E_2
    if model.startswith("dall-e-3"):
        return DALL_E_3
    return GPT_IMAGE


class OpenAIEngine(UpstreamEngine):
    provider = "openai"
    default_url = "https://api.openai.com/v1"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.family = family_for(self.model)
        self.response_format = self.entry.options.response_format or "b64_json"
        self.capabilities = hosted_capabilities(
            modes=self.family.modes,
            max_images=10,
            max_input_images=max(1, self.family.max_inputs),
            supports_mask=Mode.EDIT in self.family.modes,
            min_side=256,
            max_side=1792,
            size_multiple=1,
            max_pixels=1792 * 1024,
            allowed_sizes=self.family.sizes,
        )

    async def _generate(self, request: EngineRequest) -> list[GeneratedImage]:
        if request.n <= self.family.per_call:
            return await self._batch(request, request.n)

        async def one(seed: int) -> GeneratedImage:
            return (await self._batch(request, 1))[0]

        return await self.fan_out(request, one)

    async def _batch(self, request: EngineRequest, n: int) -> list[GeneratedImage]:
        fields = self._fields(request, n)
        if request.mode is Mode.GENERATE:
            response = await self.send("POST", "/images/generations", json={"prompt": request.prompt, **fields})
        else:
            files = await self._files(request)
            if request.mode is Mode.VARIATION:
                path = "/images/variations"
            else:
                path, fields = "/images/edits", {"prompt": request.prompt, **fields}
            form = {key: str(value) for key, value in fields.items()}
            response = await self.send("POST", path, data=form, files=files)
        items = self.json(response)["data"]
        return self.expect_count([await self.openai_image(item) for item in items], n)

    def _fields(self, request: EngineRequest, n: int) -> dict[str, Any]:
        """Parameters common to all three endpoints, as this model family takes them."""
        size = (request.width, request.height)
        if size not in self.family.sizes:  # planned for another model (a fallback): the nearest one
            size = nearest_size(*size, self.family.sizes)
        fields: dict[str, Any] = {"model": self.model, "n": n, "size": f"{size[0]}x{size[1]}"}
        if self.family.response_format:
            fields["response_format"] = self.response_format
        else:
            fields["output_format"] = "png"
            background = request.background
            if background in BACKGROUNDS and request.mode is Mode.GENERATE:
                fields["background"] = background
        quality = self.family.qualities.get(str(request.quality))
        if quality and request.mode is not Mode.VARIATION:
            fields["quality"] = quality
        if self.family is DALL_E_3 and request.rendering_style:
            fields["style"] = request.rendering_style
        return fields

    async def _files(self, request: EngineRequest) -> list[tuple[str, tuple[str, bytes, str]]]:
        field = "image[]" if self.family is GPT_IMAGE and len(request.images) > 1 else "image"
        files = [
            (field, (f"image-{index}.png", await encode_png(image), "image/png"))
            for index, image in enumerate(request.images, start=1)
        ]
        if request.mask is not None and request.mode is not Mode.VARIATION:
            files.append(("mask", ("mask.png", await encode_png(request.mask), "image/png")))
        return files
