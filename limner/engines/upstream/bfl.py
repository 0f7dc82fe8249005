"""Black Forest Labs FLUX: submit, poll, download.

``POST /v1/{model}`` with the key in ``x-key`` answers ``{"id", "polling_url"}``; ``GET polling_url``
(with the key: it is BFL's API on a regional host) answers a ``status`` until it is ``Ready``, then
``result.sample`` is a short-lived URL of the image, downloaded with the fetcher (no key).

================= ==================================================================
status            meaning here
================= ==================================================================
Pending           keep polling (every ``poll_interval`` s, up to ``timeout``)
Ready             download ``result.sample``
Request Moderated ``ModelError``: BFL refused the prompt or input image
Content Moderated ``ModelError``: BFL withheld the generated image
Error             ``ModelError``: generation failed at BFL
Task not found    ``ModelError``: BFL lost the task (or it expired)
================= ==================================================================

Kontext models (``flux-kontext-*``) take an ``aspect_ratio`` and up to four ``input_image`` fields
(edits, compositions); the others take ``width``/``height`` in multiples of 32 and text only.
One task makes one image, so ``n`` images are ``n`` concurrent tasks, each with its own seed.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
from typing import Any

import httpx

from limner.core.errors import ModelError, Timeout
from limner.core.models import EngineRequest, GeneratedImage, Mode
from limner.engines.upstream.base import UpstreamEngine, hosted_capabilities
from limner.engines.upstream.payloads import encode_png
from limner.engines.upstream.resilience import redact
from limner.engines.upstream.shapes import nearest_ratio

RATIOS = ("21:9", "16:9", "3:2", "4:3", "1:1", "3:4", "2:3", "9:16", "9:21")
INPUT_FIELDS = ("input_image", "input_image_2", "input_image_3", "input_image_4")
MODERATED = {"Request Moderated": "the request", "Content Moderated": "the generated image"}


class BflEngine(UpstreamEngine):
    provider = "bfl"
    default_url = "https://api.bfl.ai"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kontext = "kontext" in self.model
        self.poll_interval = self.entry.options.poll_interval
        modes = {Mode.GENERATE, Mode.EDIT, Mode.COMPOSE} if self.kontext else {Mode.GENERATE}
        self.capabilities = hosted_capabilities(
            modes=frozenset(modes),
            max_images=10,
            max_input_images=len(INPUT_FIELDS) if self.kontext else 1,
            supports_seed=True,
            min_side=256,
            max_side=2048 if self.kontext else 1440,
            size_multiple=32,
            max_pixels=2048 * 2048 if self.kontext else 1440 * 1440,
        )

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-key": key}

    def trusts(self, url: str) -> bool:
        """BFL's polling URLs name a regional host (``api.us1.bfl.ai`` for ``api.bfl.ai``): the key may
        go to the base host and its sibling subdomains, over the same scheme, and nowhere else."""
        if super().trusts(url):
            return True
        target, base = httpx.URL(url), self.client.base_url
        if target.scheme != base.scheme or _is_ip(base.host):
            return False
        parent = base.host.split(".", 1)[1] if base.host.count(".") >= 2 else base.host
        return target.host == parent or target.host.endswith("." + parent)

    async def _generate(self, request: EngineRequest) -> list[GeneratedImage]:
        inputs = [base64.b64encode(await encode_png(image)).decode() for image in request.images]

        async def one(seed: int) -> GeneratedImage:
            return await self._one(request, inputs, seed)

        return await self.fan_out(request, one)

    def _body(self, request: EngineRequest, inputs: list[str], seed: int) -> dict[str, Any]:
        body: dict[str, Any] = {"prompt": request.prompt, "seed": seed, "output_format": "png"}
        if self.kontext:
            body["aspect_ratio"] = nearest_ratio(request.width, request.height, RATIOS)
            body.update(zip(INPUT_FIELDS, inputs, strict=False))
        else:
            body["width"], body["height"] = _side(request.width), _side(request.height)
        if self.entry.options.safety_tolerance is not None:
            body["safety_tolerance"] = self.entry.options.safety_tolerance
        return body

    async def _one(self, request: EngineRequest, inputs: list[str], seed: int) -> GeneratedImage:
        task = self.json(await self.send("POST", f"/v1/{self.model}", json=self._body(request, inputs, seed)))
        polling_url = task.get("polling_url") or f"/v1/get_result?id={task['id']}"
        result = await self._poll(str(polling_url))
        url = result["sample"]
        return GeneratedImage(image=await self.decode(await self.download(url)), seed=seed, source_url=url)

    async def _poll(self, url: str) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.entry.timeout
        while True:
            payload = self.json(await self.send("GET", url))
            status = payload.get("status")
            if status == "Ready":
                result: dict[str, Any] = payload["result"]
                return result
            if status in MODERATED:
                raise ModelError(f"Black Forest Labs moderated {MODERATED[status]}; nothing was generated.")
            if status == "Error":
                details = payload.get("details") or payload.get("result")
                said = f": {redact(str(details))}" if details else ""
                raise ModelError(f"Black Forest Labs failed to generate the image{said}")
            if status == "Task not found":
                raise ModelError("Black Forest Labs lost the task (not found); try again.")
            if loop.time() + self.poll_interval > deadline:
                raise Timeout(f"Black Forest Labs did not finish within {self.entry.timeout:g} s.")
            await asyncio.sleep(self.poll_interval)


def _side(pixels: int) -> int:
    """FLUX 1.1 [pro] sizes: multiples of 32 from 256 to 1440."""
    return min(1440, max(256, pixels // 32 * 32))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
