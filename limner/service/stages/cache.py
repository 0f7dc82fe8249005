"""The result cache stage: a seeded request identical to an earlier one gets that request's images back.

With an explicit seed a local model makes the same pixels for the same inputs, so repeating the work is
waste. The key is a hash of everything that decides the delivered bytes: the consumer (a consumer never
gets, or learns of, what another asked), the model, the prompt and negative prompt as the model reads them,
the seed and count, the sizes, steps, guidance, strength, sampler, adapters and their weights, style, every
input image's and the mask's decoded pixels, the output format and compression, and the finishing options.
A hit returns the encoded bytes exactly as they were first delivered, Content Credentials included (the
manifest then says when they were first made), and is stored again as a new media item of the request.

Entries are kept least-recently-used first out within ``max_bytes`` (encoded bytes plus the decoded pixels
the finish stage keeps). Off for requests without a seed, for a model with ``cache_results = false``, and by
default for upstream providers (their seeded output may still vary, and they are paid per call).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from enum import Enum

from PIL import Image

from limner.core.sizes import SizePlan
from limner.engines.catalog import LOCAL_ENGINES
from limner.service.stages.finish import Encoded
from limner.service.stages.plan import Plan

NOT_PIXELS = frozenset(
    {
        "images",  # hashed as decoded pixels (a URL's content may change)
        "mask",
        "keep_media",
        "links",
        "permanent_links",
        "partial_images",
        "report_usage",
        "priority",
        "start_deadline",
    }
)
"""``ImageRequest`` fields that do not decide the delivered bytes; every other field is part of the key."""

CacheObserver = Callable[[str, bool], None]
"""Told (model id, hit) for every lookup: ``/metrics`` counts hits and misses per model."""


class ResultCache:
    """Finished images by what decided them, bounded in bytes."""

    def __init__(self, max_bytes: int, observe: CacheObserver | None = None) -> None:
        self.max_bytes = max(0, max_bytes)
        self.observe = observe
        self._entries: OrderedDict[str, tuple[list[Encoded], int]] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def key(self, plan: Plan, sizes: SizePlan, images: Sequence[Image.Image], mask: Image.Image | None) -> str | None:
        """The request's cache key, or None when it is not cached (no seed, the model's switch, no room)."""
        request, entry = plan.request, plan.entry
        enabled = entry.cache_results if entry.cache_results is not None else entry.engine in LOCAL_ENGINES
        if request.seed is None or not enabled or self.max_bytes == 0:
            return None
        fields: dict[str, object] = {
            name: value for name, value in vars(request).items() if name not in NOT_PIXELS
        }  # every request field, so one added later is part of the key unless it is named below
        fields.update(
            model=entry.id,
            prompt=plan.prompt,
            negative_prompt=plan.negative_prompt,
            sizes=[sizes.output, sizes.generate],
            steps=plan.steps,
            loras=[[lora.name, lora.weight] for lora in plan.loras],
            style=plan.style.id,
            mode=request.mode.value,
            upscaler=plan.upscaler.id if plan.upscaler is not None else None,
        )
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=_jsonable).encode())
        for image in [*images, *([mask] if mask is not None else [])]:
            digest.update(f"|{image.mode}|{image.width}x{image.height}|".encode())
            digest.update(image.tobytes())
        return digest.hexdigest()

    def get(self, key: str, model: str) -> list[Encoded] | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        self.hits += found is not None
        self.misses += found is None
        if self.observe is not None:
            self.observe(model, found is not None)
        return None if found is None else list(found[0])

    def put(self, key: str, encoded: list[Encoded]) -> None:
        size = sum(_size(one) for one in encoded)
        if size > self.max_bytes or key in self._entries:
            return
        self._entries[key] = (list(encoded), size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, dropped) = self._entries.popitem(last=False)
            self.bytes -= dropped

    def __len__(self) -> int:
        return len(self._entries)


def _jsonable(value: object) -> object:
    """Request values JSON cannot write: bytes by their digest, dataclasses and enums by their content."""
    if isinstance(value, bytes | bytearray | memoryview):
        return hashlib.sha256(value).hexdigest()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    return repr(value)


def _size(encoded: Encoded) -> int:
    image = encoded.item.image
    return len(encoded.data) + image.width * image.height * len(image.getbands())
