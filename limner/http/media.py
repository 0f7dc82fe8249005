"""``GET /media/{key}``: signed, expiring downloads of stored images, served by limner itself."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from limner.core.errors import NotFound
from limner.http import openapi
from limner.http.deps import get_state
from limner.media.store import mime_type_for

router = APIRouter(tags=["Media"])


@router.get(
    "/media/{key}",
    response_class=Response,
    responses={
        **openapi.ok("The image.", content={kind: {"schema": openapi.BINARY} for kind in openapi.IMAGE_TYPES}),
        403: {"model": openapi.CodedErrorResponse, "description": "Forbidden: the link is invalid or has expired."},
        404: {"model": openapi.CodedErrorResponse, "description": "Not Found: no such image (any more)."},
    },
)
async def download_media(request: Request, key: str, expires: int = 0, signature: str = "") -> Response:
    """The image bytes, for anyone holding an unexpired signed link."""
    state = get_state(request)
    if not state.signer.verify(key, expires, signature):
        return JSONResponse(
            {"error": {"code": "forbidden", "message": "This link is invalid or has expired."}}, status_code=403
        )
    try:
        data = await state.store.get(key)
    except NotFound:
        return JSONResponse({"error": {"code": "not_found", "message": "No such image."}}, status_code=404)
    return Response(
        data,
        media_type=mime_type_for(key),  # the store answered: the key is valid
        headers={"Cache-Control": "private, max-age=3600, immutable", "Content-Length": str(len(data))},
    )
