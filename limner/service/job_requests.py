"""An async job's request as it is stored: its ``ImageRequest`` (input images as they were sent: file bytes,
a URL or limner's own media) and its dialect's ``Answer``, as JSON.

The runner reads them back and runs the request through ``ImageService`` like a synchronous one; nothing
of the HTTP request (headers, credentials, the wire body) is kept. An image already decoded (an
in-process caller's ``SourceImage``) has no wire form and cannot be queued."""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

from limner.core.answer import Answer
from limner.core.models import EncodedImage, ImageInput, ImageRequest, LoraChoice, MediaRef, SizeSpec
from limner.service.job_shapes import StoredRequest

VERSION = 1
"""Of the stored form: a row written by another version is failed with a message, never misread."""
_NESTED = frozenset({"size", "images", "mask", "loras"})


class NotQueueable(ValueError):
    """The request holds something with no stored form (a decoded image)."""


def dump(request: ImageRequest) -> bytes:
    """The request as JSON bytes (file bytes in base64)."""
    data: dict[str, Any] = {
        field.name: getattr(request, field.name) for field in dataclasses.fields(request) if field.name not in _NESTED
    }
    data["size"] = dataclasses.asdict(request.size)
    data["images"] = [_image(image) for image in request.images]
    data["mask"] = None if request.mask is None else _image(request.mask)
    data["loras"] = [dataclasses.asdict(lora) for lora in request.loras]
    return json.dumps({"version": VERSION, "request": data}, separators=(",", ":")).encode()


def load(stored: bytes) -> ImageRequest:
    """The request ``dump`` wrote (``ValueError`` for anything else)."""
    document = json.loads(stored)
    if not isinstance(document, dict) or document.get("version") != VERSION:
        raise ValueError("the job was stored in a form this server does not read")
    data: dict[str, Any] = dict(document["request"])
    known = {field.name for field in dataclasses.fields(ImageRequest)}
    scalars = {name: value for name, value in data.items() if name in known and name not in _NESTED}
    mask = data.get("mask")
    return ImageRequest(
        **scalars,
        size=SizeSpec(**data.get("size", {})),
        images=[_source(image) for image in data.get("images", [])],
        mask=None if mask is None else _source(mask),
        loras=[LoraChoice(**lora) for lora in data.get("loras", [])],
    )


def stored(method: str, path: str, query: str, job: tuple[ImageRequest, Answer] | None = None) -> StoredRequest:
    """What a job row keeps of a request: where it came, and for an async job what runs (``job``)."""
    if job is None:
        return StoredRequest(method, path, query)
    request, answer = job
    return StoredRequest(method, path, query, dump(request), answer.to_json())


def load_answer(stored: str) -> Answer:
    return Answer.from_json(stored)


def _image(image: ImageInput) -> dict[str, Any]:
    if not isinstance(image, EncodedImage):
        raise NotQueueable(f"{image.label} is already decoded: it cannot be stored with a queued job")
    source = image.source
    item: dict[str, Any] = {"label": image.label, "param": image.param}
    if isinstance(source, bytes):
        item["bytes"] = base64.b64encode(source).decode()
    elif isinstance(source, MediaRef):
        item["media"] = {"owner": source.owner, "key": source.key}
    else:
        item["text"] = source
    return item


def _source(item: dict[str, Any]) -> EncodedImage:
    source: bytes | str | MediaRef
    if "bytes" in item:
        source = base64.b64decode(item["bytes"])
    elif "media" in item:
        source = MediaRef(**item["media"])
    else:
        source = item["text"]
    return EncodedImage(source, item["label"], item["param"])
