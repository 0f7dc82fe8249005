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
from limner.core.models import (
    ControlChoice,
    EncodedImage,
    Expand,
    ImageInput,
    ImageRequest,
    LoraChoice,
    MediaRef,
    ReferenceChoice,
    SizeSpec,
    UpscaleChoice,
)
from limner.service.job_shapes import StoredRequest

VERSION = 1
"""Of the stored form: a row written by another version is failed with a message, never misread."""
_NESTED = frozenset({"size", "images", "mask", "loras", "controls", "reference_images", "upscale", "expand"})


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
    data["controls"] = [{**_fields(control), "image": _image(control.image)} for control in request.controls]
    data["reference_images"] = [{**_fields(ref), "image": _image(ref.image)} for ref in request.reference_images]
    data["upscale"] = None if request.upscale is None else dataclasses.asdict(request.upscale)
    data["expand"] = None if request.expand is None else dataclasses.asdict(request.expand)
    return json.dumps({"version": VERSION, "request": data}, separators=(",", ":")).encode()


def load(stored: bytes) -> ImageRequest:
    """The request ``dump`` wrote (``ValueError`` for anything else)."""
    document = json.loads(stored)
    if not isinstance(document, dict) or document.get("version") != VERSION:
        raise ValueError("the job was stored in a form this server does not read")
    data: dict[str, Any] = dict(document["request"])
    known = {field.name for field in dataclasses.fields(ImageRequest)}
    scalars = {name: value for name, value in data.items() if name in known and name not in _NESTED}
    mask, upscale, expand = data.get("mask"), data.get("upscale"), data.get("expand")
    return ImageRequest(
        **scalars,
        size=SizeSpec(**data.get("size", {})),
        images=[_source(image) for image in data.get("images", [])],
        mask=None if mask is None else _source(mask),
        loras=[LoraChoice(**lora) for lora in data.get("loras", [])],
        controls=[ControlChoice(**{**item, "image": _source(item["image"])}) for item in data.get("controls", [])],
        reference_images=[
            ReferenceChoice(**{**item, "image": _source(item["image"])}) for item in data.get("reference_images", [])
        ],
        upscale=None if upscale is None else UpscaleChoice(**upscale),
        expand=None if expand is None else Expand(**expand),
    )


def stored(method: str, path: str, query: str, job: tuple[ImageRequest, Answer] | None = None) -> StoredRequest:
    """What a job row keeps of a request: where it came, and for an async job what runs (``job``)."""
    if job is None:
        return StoredRequest(method, path, query)
    request, answer = job
    return StoredRequest(method, path, query, dump(request), answer.to_json())


def load_answer(stored: str) -> Answer:
    return Answer.from_json(stored)


def _fields(choice: ControlChoice | ReferenceChoice) -> dict[str, Any]:
    """A choice's own values, its image left to ``_image`` (``asdict`` would copy the image's bytes)."""
    return {field.name: getattr(choice, field.name) for field in dataclasses.fields(choice) if field.name != "image"}


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
