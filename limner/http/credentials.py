"""``POST /playground/credentials``: what an image's Content Credentials say, read on the server with the
C2PA library (a browser has no C2PA reader of its own), for the playground to show beside each result:
who signed it and when, the actions, the digital source type, the ingredients, and whether the signature
and hard binding hold. It reads what it is sent and keeps nothing, so it is no durable POST."""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import asdict

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from limner.core.errors import InvalidRequest
from limner.http.routing import read_json
from limner.media.manifest_store import store_size
from limner.media.provenance import Report, image_format, read, signed_format

MAX_STORE_BYTES = 8 << 20
"""The largest manifest store read here: limner's own results carry at most 1 MiB per input's."""


class CredentialsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: str = Field(description="A PNG, JPEG or WebP image, base64, as the playground received it")


async def read_credentials(request: Request) -> Response:
    """The image's Content Credentials as ``limner provenance check --json`` tells them (``present`` false
    when it has none), plus ``trusted``: whether its signer is on a trust list."""
    body = await read_json(request, CredentialsBody)
    try:
        data = base64.b64decode(body.image, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("'image' is not base64: send the image's bytes in base64.", param="image") from None
    mime_type = image_format(data)
    if mime_type is None:
        raise InvalidRequest("'image' is not a PNG, JPEG or WebP image.", param="image")
    if (size := store_size(data, mime_type)) > MAX_STORE_BYTES:
        raise InvalidRequest(
            f"'image' carries {size // 1024} KB of Content Credentials, more than the "
            f"{MAX_STORE_BYTES // 1024} KB this reader reads.",
            param="image",
        )
    report = await asyncio.to_thread(_report, data)
    return JSONResponse({**asdict(report), "trusted": report.state == "Trusted"})


def _report(data: bytes) -> Report:
    mime_type = signed_format(data)
    return read(data, mime_type) if mime_type is not None else Report(present=False)
