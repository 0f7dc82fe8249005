"""OpenAI Images: ``/v1/images/generations`` (JSON), ``/v1/images/edits`` and ``/v1/images/variations``
(multipart), ``/v1/models``. Shapes follow the official API so the ``openai`` SDK works unchanged,
error classes included.

limner extensions, fenced here and in the README: ``seed``, ``negative_prompt``, ``steps``,
``guidance_scale``, ``strength`` (edits), ``style_preset``, ``loras`` (``[{"name", "weight"}]``, a JSON
string in edit forms), ``scheduler``, ``exact`` (no denoising cache), ``upscale`` (``{model, scale, refine}``:
a hires fix), ``expand`` (edits: outpainting), ``seed`` on each returned image, and ``loras`` on model
objects; and ``/v1/images/upscale`` (one image 2x or 4x by an upscaler, as a file or base64 or a URL).

``stream: true`` on generations and edits answers OpenAI's server-sent events (``stream``).

Every field of today's ``openai`` SDK is recognised; a field or value limner cannot deliver is refused with
400 ``unsupported_value`` and ``param`` naming it, never served as something else (``refuse_undeliverable``):
``output_format`` gif or svg, and with them ``frame_count``, ``frame_duration_ms``, ``svg``; ``markup`` on
edits. Fields that tune how a model works are accepted and applied where limner has an equivalent
(``complexity: high`` runs more denoising steps, ``quality`` and ``style`` reach upstream providers and
prices; ``moderation`` and ``input_fidelity`` have nothing to steer in local engines), and reported where
OpenAI reports them: ``quality``, ``background``, ``usage`` and ``safety_identifier`` on GPT image answers,
``revised_prompt`` (the prompt the engine ran, after any style preset) on every ``dall-e-3`` image. Other
models' answers repeat ``quality`` and ``background`` only where the request used a word OpenAI's answers
use (``low`` ... ``max``; ``transparent``, ``opaque``): never ``hd``, ``standard`` or ``auto``; and
``background`` says what was delivered (``opaque`` where the model made no transparency).

The JSON body of generations is validated strictly, as OpenAI does (no ``"2"`` for a number, no ``"true"``
for a boolean); the forms of edits and variations carry every field as text and are read as such.

The modules: ``protocol`` (wire models), ``request`` (wire -> ``ImageRequest``), ``render`` (results and
errors), ``stream`` (server-sent events), ``routes`` (endpoints); ``OPENAI`` is the dialect
(``limner.http.dialect.Dialect``).
"""

from __future__ import annotations

from fastapi import APIRouter

from limner.dialects.openai.protocol import (
    DEFAULT_MODEL,
    DIALECT,
    EditParams,
    GenerationParams,
    ImagesResponse,
    OpenAIErrorResponse,
    is_gpt_image,
)
from limner.dialects.openai.render import ERROR_MAP, error_body, models_payload, render_error, render_result
from limner.dialects.openai.routes import (
    EDIT_BODY,
    ERROR_RESPONSES,
    GENERATION_BODY,
    IMAGES_OK,
    RENDERER,
    build_router,
    create_image,
    edit_from_form,
)
from limner.http.dialect import Mount, VendorDialect

__all__ = [
    "DEFAULT_MODEL",
    "DIALECT",
    "EDIT_BODY",
    "ERROR_MAP",
    "ERROR_RESPONSES",
    "GENERATION_BODY",
    "IMAGES_OK",
    "OPENAI",
    "RENDERER",
    "EditParams",
    "GenerationParams",
    "ImagesResponse",
    "OpenAI",
    "OpenAIErrorResponse",
    "create_image",
    "edit_from_form",
    "error_body",
    "is_gpt_image",
    "models_payload",
    "render_error",
    "render_result",
]


def _routes(dialect: VendorDialect, mount: Mount) -> APIRouter:
    """Generations, edits and the model list are the shared router's when ImagineArt shares the prefix."""
    return build_router(dialect, images=not mount.shared, models=not mount.shared)


OPENAI = VendorDialect(DIALECT, ERROR_MAP, render_error, _routes, renderer=RENDERER)
"""The OpenAI Images dialect: OpenAI's error envelope, tokens over any transport."""
