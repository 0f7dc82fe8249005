"""ImagineArt 2.0: ``POST /v1/images/generations`` and ``/v1/images/edits`` (multipart, answering PNG bytes),
``GET /v1/models`` (the two models and the parameters each accepts) and ``GET /health``.

Decisions, documented in the README:

- The public ids ``text-to-image`` and ``image-edit`` are catalog aliases; whatever engine the catalog
  routes them to does the work. A catalog without them answers 502 ``model_not_available``.
- ``seed`` 0, -1 or omitted draws a random seed; every answer says the seed used in ``X-Seed``, so
  sending it back reproduces the image. ``X-Model`` names the catalog model that ran, ``X-Width`` and
  ``X-Height`` the pixel size, ``X-Request-Id`` the request.
- ``reasoning=high`` asks the core for high effort: twice the model's default denoising steps.
- "Clean metadata": the PNG carries no text chunks at all (no prompt, no parameters), whatever the
  server's ``embed_metadata`` setting; the headers carry what a client needs.
- ``aspect_ratio=auto`` (edits) keeps the first reference image's ratio, however many images follow it.
- An image part's type is judged by its bytes, not its label: curl labels ``.webp`` and ``.heic`` files
  ``application/octet-stream``. The service decodes PNG, JPEG, WebP, HEIC and HEIF after admission; any
  other bytes are 400 ``invalid_image`` naming the image and the format found.
- Spent credits are 401 ``invalid_token`` ("this token has no credits left"): the reference has no 402 or
  403, and its 429 ``rate_limited`` is what clients retry, forever when nothing will change.
- ``GET /v1/models`` names the two models as the reference does ("ImagineArt 2.0", "ImagineArt 2.0 Edit")
  and says in ``served_by`` which catalog model does the work.

The modules: ``protocol`` (wire models), ``request`` (forms -> ``ImageRequest``), ``render`` (the PNG answer
and errors), ``listing`` (``GET /v1/models``), ``routes`` (endpoints); ``IMAGINEART`` is the dialect
(``limner.http.dialect.Dialect``), whose tokens travel over HTTPS only.
"""

from __future__ import annotations

from fastapi import APIRouter

from limner.dialects.imagineart.listing import flat_properties, model_schema, models_payload
from limner.dialects.imagineart.protocol import (
    DIALECT,
    EditForm,
    GenerationForm,
    ImagineArtErrorResponse,
    ImagineArtModel,
)
from limner.dialects.imagineart.render import ERROR_MAP, render_error, render_result
from limner.dialects.imagineart.request import edit_request, generation_request
from limner.dialects.imagineart.routes import (
    EDIT_BODY,
    ERROR_RESPONSES,
    GENERATION_BODIES,
    IMAGE_OK,
    RENDERER,
    build_router,
    edit_from_form,
    generate_image,
)
from limner.http.dialect import Mount, VendorDialect

__all__ = [
    "DIALECT",
    "EDIT_BODY",
    "ERROR_MAP",
    "ERROR_RESPONSES",
    "GENERATION_BODIES",
    "IMAGE_OK",
    "IMAGINEART",
    "EditForm",
    "GenerationForm",
    "ImagineArt",
    "ImagineArtErrorResponse",
    "ImagineArtModel",
    "edit_from_form",
    "edit_request",
    "flat_properties",
    "generate_image",
    "generation_request",
    "model_schema",
    "models_payload",
    "render_error",
    "render_result",
]


def _routes(dialect: VendorDialect, mount: Mount) -> APIRouter:
    """Generations, edits and the model list are the shared router's when OpenAI shares the prefix;
    ``GET /health`` only under a prefix (the app answers it at the root)."""
    return build_router(dialect, images=not mount.shared, models=not mount.shared, probe=bool(mount.prefix))


IMAGINEART = VendorDialect(DIALECT, ERROR_MAP, render_error, _routes, tokens="https-only", renderer=RENDERER)
"""The ImagineArt 2.0 dialect: its error envelope; its tokens over HTTPS only, as the reference says
("Use HTTPS exclusively. Tokens transmitted over plain HTTP are immediately revoked")."""
