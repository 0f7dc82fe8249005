"""``GET /media/{key}``: signed, expiring downloads of stored images, served by limner itself."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from limner.core.errors import NotFound
from limner.http.deps import get_state
from limner.media.encode import MIME_BY_FORMAT

router = APIRouter(tags=["Media"])


def _mime_for(key: str) -> str:
    extension = key.rsplit(".", 1)[-1]
    return MIME_BY_FORMAT.get("jpeg" if extension == "jpg" else extension, "application/octet-stream")


@router.get("/media/{key}")
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
        media_type=_mime_for(key),
        headers={"Cache-Control": "private, max-age=3600, immutable", "Content-Length": str(len(data))},
    )
