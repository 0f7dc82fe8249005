"""Input images as the dialects receive them, translated to ``EncodedImage`` for the service to decode
after admission. One place for how images are labelled in errors and how many a request may carry."""

from __future__ import annotations

from collections.abc import Sequence

from limner.core.errors import InvalidRequest
from limner.core.models import EncodedImage, ImageInput, MediaRef
from limner.http.routing import FormBody

MAX_INPUT_IMAGES = 16
"""The most input images any dialect takes in one request (ImagineArt takes fewer: it says so itself)."""


def labels(label: str, count: int) -> list[str]:
    """How errors name each of ``count`` images: ``image`` alone, or ``image 1``, ``image 2``, ... of several."""
    return [label] if count == 1 else [f"{label} {index}" for index in range(1, count + 1)]


def encoded(sources: Sequence[bytes | str | MediaRef], *, label: str = "image", param: str) -> list[ImageInput]:
    """Image references from one request field, labelled for errors."""
    return [
        EncodedImage(source, name, param) for source, name in zip(sources, labels(label, len(sources)), strict=True)
    ]


def uploads(form: FormBody, *names: str, label: str = "image") -> list[ImageInput]:
    """The files of a multipart form under any of ``names``, in order, labelled as one list."""
    found = [upload for name in names for upload in form.files.get(name, [])]
    return [
        EncodedImage(upload.data, name, upload.field)
        for upload, name in zip(found, labels(label, len(found)), strict=True)
    ]


def references(value: str | list[str] | None, *, param: str = "image", empty_ok: bool = False) -> list[str]:
    """A JSON field that holds one image reference or a list of them (AIGNE Hub, AI.ML), checked for count."""
    refs = [value] if isinstance(value, str) else list(value or [])
    if value is not None and not refs and not empty_ok:
        raise InvalidRequest(f"'{param}' must hold at least one image URL; omit it for text to image.", param=param)
    if len(refs) > MAX_INPUT_IMAGES:
        raise InvalidRequest(f"At most {MAX_INPUT_IMAGES} images can be given; got {len(refs)}.", param=param)
    return refs
