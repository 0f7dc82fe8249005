"""``Limner-Priority`` and ``Limner-Start-Deadline``: the scheduling headers every dialect accepts.

Read here, in the HTTP layer, onto the request's typed fields (``ImageRequest.priority`` and
``start_deadline``); the accounting gate caps the priority at the consumer's maximum and fills in its
default deadline, and the model's queue applies both. A malformed value is the dialect's own 400.
"""

from __future__ import annotations

import math

from starlette.requests import Request

from limner.accounts.consumers import MAX_PRIORITY, MAX_START_DEADLINE
from limner.core.errors import InvalidRequest
from limner.core.models import ImageRequest

PRIORITY_HEADER = "Limner-Priority"
START_DEADLINE_HEADER = "Limner-Start-Deadline"


def read_scheduling(request: Request, image_request: ImageRequest) -> ImageRequest:
    """``image_request`` with the priority and start deadline its HTTP request's headers name."""
    priority = request.headers.get(PRIORITY_HEADER)
    if priority is not None:
        image_request.priority = _priority(priority)
    deadline = request.headers.get(START_DEADLINE_HEADER)
    if deadline is not None:
        image_request.start_deadline = _deadline(deadline)
    return image_request


def _priority(value: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        number = -1
    if not 0 <= number <= MAX_PRIORITY:
        raise InvalidRequest(
            f"{PRIORITY_HEADER} must be a whole number from 0 to {MAX_PRIORITY}; got {value!r}.", param=PRIORITY_HEADER
        )
    return number


def _deadline(value: str) -> float:
    try:
        seconds = float(value.strip())
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_START_DEADLINE):
        raise InvalidRequest(
            f"{START_DEADLINE_HEADER} must be a number of seconds above 0 and at most {MAX_START_DEADLINE:g}; "
            f"got {value!r}.",
            param=START_DEADLINE_HEADER,
        )
    return seconds
