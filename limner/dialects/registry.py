"""The dialects limner speaks, in the order ``create_app`` mounts them (each one a ``limner.http.dialect.Dialect``).

========== ============================================================================
dialect    routes, under its prefix (``settings.mounts``: dialect -> prefix, '' the root)
========== ============================================================================
(shared)   POST /v1/images/generations, POST /v1/images/edits, GET /v1/models, when openai and
           imagineart share a prefix (the default): one route each picks the dialect per request
           (``limner.dialects.shared_paths``)
openai     POST /v1/images/generations (JSON), POST /v1/images/edits,
           POST /v1/images/variations, GET /v1/models, GET /v1/models/{id}
imagineart POST /v1/images/generations (multipart), POST /v1/images/edits, GET /v1/models,
           GET /health (prefixed mounts only: the root already has it)
aigne      POST /api/images/generations
aiml       POST /v1/generation/images, GET /v1/media/images/{path-encoded}
milady     POST /api/v1/generate-image
========== ============================================================================

A dialect missing from ``mounts`` is not mounted. Adding one: its module (a ``Dialect``), a line in
``DIALECTS``, its tests and docs (and its name in ``limner.settings.DIALECTS``, the default mounts).
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import APIRouter

from limner.dialects import shared_paths
from limner.dialects.aigne import AIGNE
from limner.dialects.aiml import AIML
from limner.dialects.imagineart import IMAGINEART
from limner.dialects.milady import MILADY
from limner.dialects.openai import OPENAI
from limner.http.dialect import Dialect, ErrorRenderer, Mount
from limner.http.translation import Renderer

DIALECTS: tuple[Dialect, ...] = (OPENAI, IMAGINEART, AIGNE, AIML, MILADY)
SHARING = (OPENAI.name, IMAGINEART.name)
"""The dialects whose common paths are one route each when they share a prefix (``shared_paths``)."""


def shares_paths(mounts: Mapping[str, str]) -> bool:
    """Whether OpenAI and ImagineArt are both mounted, at one prefix."""
    first, second = SHARING
    return first in mounts and second in mounts and mounts[first] == mounts[second]


def renderers() -> dict[str, tuple[Renderer, ErrorRenderer]]:
    """Each dialect's renderer and error envelope by its name: how the job runner answers its jobs."""
    return {
        dialect.name: (dialect.renderer, dialect.render_error) for dialect in DIALECTS if dialect.renderer is not None
    }


def routers(mounts: Mapping[str, str]) -> list[tuple[APIRouter, str]]:
    """Every dialect router to mount, with its prefix, in order: the shared paths first (when shared), then
    each dialect of ``DIALECTS`` that ``mounts`` names."""
    shared = shares_paths(mounts)
    found: list[tuple[APIRouter, str]] = []
    if shared:
        found.append((shared_paths.build_router(), mounts[OPENAI.name]))
    for dialect in DIALECTS:
        if dialect.name in mounts:
            prefix = mounts[dialect.name]
            found.append((dialect.routes(Mount(prefix, shared=shared and dialect.name in SHARING)), prefix))
    return found
