"""A dialect's image POST as the service sees it: translate (wire → ``ImageRequest`` and an ``Answer``),
run (``ImageService``), render (the dialect's ``Renderer``).

Every image POST endpoint of a dialect is a ``Translator``: it reads and checks its body and returns a
``Translated``, nothing more. The route (``limner.http.routing.dialect_route``, through
``limner.http.durable``) decides what happens next: run it now and render it (``respond``), check it and
queue it as an async job, or replay the answer kept for its idempotency key."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request, Response

from limner.core.answer import Answer
from limner.core.models import ImageRequest, ImageResult
from limner.http.context import current_request_id
from limner.service.image_service import ImageService

RenderResult = Callable[[ImageResult, Answer], Response]
"""A finished result as the dialect's answer (raises a ``LimnerError`` it cannot be answered with)."""
StreamResult = Callable[[ImageService, ImageRequest, Answer], Awaitable[Response]]
"""Start the request and answer its progress as server-sent events (errors until it is accepted are raised)."""
StreamEvents = Callable[[ImageRequest, ImageResult, Answer], bytes]
"""A finished result as the stream's closing events: what an async job that asked for a stream keeps."""


@dataclass(frozen=True)
class Renderer:
    """How a dialect answers its translated requests: one body, or (if it streams) server-sent events."""

    render: RenderResult
    stream: StreamResult | None = None
    events: StreamEvents | None = None


@dataclass(frozen=True)
class Translated:
    """One image request, translated once: what the service runs, how the dialect answers, and who renders."""

    request: ImageRequest
    answer: Answer
    renderer: Renderer


Translator = Callable[[Request], Awaitable[Translated]]


async def respond(service: ImageService, translated: Translated) -> Response:
    """Run the request now and render the dialect's answer (a stream, when it asked for one)."""
    answer, renderer = translated.answer, translated.renderer
    if answer.stream and renderer.stream is not None:
        return await renderer.stream(service, translated.request, answer)
    result = await service.run(translated.request, current_request_id())
    return renderer.render(result, answer)
