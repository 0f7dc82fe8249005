"""The seam between ``ImageService`` and accounting: admission before work, settlement after it.

``ImageService.run`` opens a ticket for every request, calls ``admit`` once it knows the model (rate
limits: before any input image is decoded or fetched), ``reserve`` once it knows the output size (the
credit hold, before the engine runs), and ``deliver`` once the images are stored. Leaving the ticket's
context settles it: committed if delivered, refunded on any error or cancellation (a client that went
away), recorded either way.
The service knows only this protocol; ``limner.service.accounting`` implements it, and ``OpenGate`` (no
limits, no records) is what a bare service uses.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from limner.core.models import ImageRequest, ImageResult
from limner.engines.catalog import ModelEntry


@dataclass(frozen=True)
class Admission:
    """How an admitted request is queued: its priority (the asked one, capped at the consumer's maximum)
    and how many seconds it may wait to start (asked, else the consumer's default; None: no limit)."""

    priority: int = 0
    start_deadline: float | None = None


class Ticket(Protocol):
    async def admit(self, entry: ModelEntry, *, n: int, loras: tuple[str, ...] = ()) -> Admission:
        """Check the consumer may use this model and these adapters (else answer as for ones that do not
        exist) and the rate limits for ``n`` images of it, or raise (404, 429, ...)."""

    async def reserve(self, *, width: int, height: int, cached: bool = False) -> None:
        """Hold the price of the admitted images at this size (``cached``: answered from the result cache,
        at the model's cache price where it has one), or raise (402)."""

    def deliver(self, result: ImageResult) -> None:
        """The images exist and are about to be returned: charge for them when the ticket closes."""


class Gate(Protocol):
    def open(self, request: ImageRequest, request_id: str) -> AbstractAsyncContextManager[Ticket]:
        """A ticket for one request; settled (and recorded) when its context exits."""

    async def admit_waiter(self, request: ImageRequest, entry: ModelEntry) -> None:
        """A duplicate that waits for an identical request to finish instead of running (an
        ``Idempotency-Key`` in flight): count it against the rate limits as a request with no images, or
        raise (429). Nothing is held or recorded: it is answered with the first request's response."""


class _OpenTicket:
    def __init__(self, request: ImageRequest) -> None:
        self.request = request

    async def admit(self, entry: ModelEntry, *, n: int, loras: tuple[str, ...] = ()) -> Admission:
        return Admission(self.request.priority or 0, self.request.start_deadline)

    async def reserve(self, *, width: int, height: int, cached: bool = False) -> None:
        return None

    def deliver(self, result: ImageResult) -> None:
        return None

    async def __aenter__(self) -> _OpenTicket:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


class OpenGate:
    """Admits everything and records nothing."""

    def open(self, request: ImageRequest, request_id: str) -> AbstractAsyncContextManager[Ticket]:
        return _OpenTicket(request)

    async def admit_waiter(self, request: ImageRequest, entry: ModelEntry) -> None:
        return None
