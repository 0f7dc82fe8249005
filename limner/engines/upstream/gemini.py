"""Google Gemini image models: ``POST /models/{model}:generateContent`` with the key in ``x-goog-api-key``.

The prompt and any source images go in as one user turn of ``parts`` (``text`` and ``inline_data``);
the answer's first candidate holds image parts (``inlineData``) and text parts. The image becomes the
result and the text becomes ``GeneratedImage.text`` (Milady's ``text`` field); "thought" parts of
thinking models are skipped. One call makes one image, so ``n`` images are ``n`` concurrent calls.
The size goes as ``imageConfig.aspectRatio`` (option ``image_config = false`` leaves it out for
models that refuse it; option ``image_size`` adds ``imageSize``, e.g. "2K" for Gemini 3 Pro).
A blocked prompt or an answer without an image is a ``ModelError`` that says why.
"""

from __future__ import annotations

import base64
from typing import Any

from limner.core.errors import ModelError
from limner.core.models import EngineRequest, GeneratedImage, Mode
from limner.engines.upstream.base import UpstreamEngine, hosted_capabilities
from limner.engines.upstream.payloads import encode_png
from limner.engines.upstream.resilience import redact
from limner.engines.upstream.shapes import nearest_ratio

RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
AUTH_STATUSES = ("UNAUTHENTICATED", "PERMISSION_DENIED")
AUTH_REASONS = ("API_KEY_INVALID", "API_KEY_SERVICE_BLOCKED", "API_KEY_HTTP_REFERRER_BLOCKED")
SEED_LIMIT = 2**31
"""``generationConfig.seed`` is an int32."""


class GeminiEngine(UpstreamEngine):
    provider = "gemini"
    default_url = "https://generativelanguage.googleapis.com/v1beta"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.capabilities = hosted_capabilities(
            modes=frozenset({Mode.GENERATE, Mode.EDIT, Mode.COMPOSE}),
            max_images=10,
            max_input_images=self.entry.options.max_input_images,
            supports_seed=True,
        )

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-goog-api-key": key}

    def is_auth_error(self, status: int, payload: Any) -> bool:
        """Google answers a bad key with 400 INVALID_ARGUMENT and reason API_KEY_INVALID."""
        error = payload.get("error") if isinstance(payload, dict) else None
        if not isinstance(error, dict):
            return status in (401, 403)
        reasons = [detail.get("reason") for detail in error.get("details") or [] if isinstance(detail, dict)]
        return status in (401, 403) or error.get("status") in AUTH_STATUSES or any(r in AUTH_REASONS for r in reasons)

    async def _generate(self, request: EngineRequest) -> list[GeneratedImage]:
        parts: list[dict[str, Any]] = [{"text": request.prompt}]
        for image in request.images:
            data = base64.b64encode(await encode_png(image)).decode()
            parts.append({"inline_data": {"mime_type": "image/png", "data": data}})

        async def one(seed: int) -> GeneratedImage:
            return await self._one(request, parts, seed % SEED_LIMIT)

        return await self.fan_out(request, one)

    def _config(self, request: EngineRequest, seed: int) -> dict[str, Any]:
        config: dict[str, Any] = {"responseModalities": ["TEXT", "IMAGE"], "seed": seed}
        if self.entry.options.image_config:
            image_config = {"aspectRatio": nearest_ratio(request.width, request.height, RATIOS)}
            if self.entry.options.image_size:
                image_config["imageSize"] = self.entry.options.image_size
            config["imageConfig"] = image_config
        return config

    async def _one(self, request: EngineRequest, parts: list[dict[str, Any]], seed: int) -> GeneratedImage:
        body = {"contents": [{"role": "user", "parts": parts}], "generationConfig": self._config(request, seed)}
        payload = self.json(await self.send("POST", f"/models/{self.model}:generateContent", json=body))
        blocked = (payload.get("promptFeedback") or {}).get("blockReason")
        if blocked:
            raise ModelError(f"Gemini blocked the prompt ({blocked}).")
        candidates = payload.get("candidates") or []
        texts: list[str] = []
        image_data: str | None = None
        parts_out = ((candidates[0].get("content") or {}).get("parts") or []) if candidates else []
        for part in parts_out:
            if part.get("thought"):
                continue
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            inline = part.get("inlineData") or part.get("inline_data")
            if inline and image_data is None:
                image_data = inline["data"]
        text = "\n".join(texts).strip() or None
        if image_data is None:
            reason = candidates[0].get("finishReason", "none") if candidates else "no candidates"
            said = f": {redact(text)}" if text else ""
            raise ModelError(f"Gemini returned no image (finish reason {reason}){said}")
        return GeneratedImage(image=await self.decode_b64(image_data), seed=seed, text=text)
