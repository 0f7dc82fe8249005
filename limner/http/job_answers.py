"""The dialects' renderers as the job runner uses them (``limner.service.job_runner.JobAnswers``): a finished
job's result or error as the answer its synchronous request would have had, in the bytes kept for it.

The app builds one from the dialect registry and hands it to the runner, so the service renders through
the dialects without importing them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fastapi import Response

from limner.core.answer import Answer
from limner.core.errors import LimnerError
from limner.core.models import ImageRequest, ImageResult
from limner.http.dialect import ErrorRenderer
from limner.http.durable import kept_headers
from limner.http.streaming import finished_stream
from limner.http.translation import Renderer
from limner.service.job_shapes import StoredResponse


@dataclass(frozen=True)
class DialectAnswers:
    """Each dialect's ``Renderer`` and error envelope, by the name its ``Answer`` carries."""

    renderers: Mapping[str, tuple[Renderer, ErrorRenderer]]

    def render(self, request: ImageRequest, result: ImageResult, answer: Answer) -> StoredResponse:
        renderer, _ = self._of(answer)
        if answer.stream and renderer.events is not None:  # asked for a stream: its events, all at once
            return _stored(finished_stream(renderer.events(request, result, answer)))
        return _stored(renderer.render(result, answer))

    def render_error(self, error: LimnerError, answer: Answer, request_id: str) -> StoredResponse:
        return _stored(self._of(answer)[1](error, request_id))

    def _of(self, answer: Answer) -> tuple[Renderer, ErrorRenderer]:
        found = self.renderers.get(answer.dialect)
        if found is None:
            raise LimnerError(f"Internal error: no dialect '{answer.dialect}' answers this job on this server.")
        return found


def _stored(response: Response) -> StoredResponse:
    return StoredResponse(response.status_code, kept_headers(response.headers.items()), bytes(response.body))
