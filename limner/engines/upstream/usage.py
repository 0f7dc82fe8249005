"""One record per upstream ``generate`` call, for usage, cost and provider health.

``UpstreamEngine.subscribe(observer)`` calls the observer with each record as the call ends
(success, error or cancellation); ``engine.calls`` keeps the latest few. ``observe_calls`` hooks an
observer into whatever the catalog built for a model (fallback engines forward to each engine),
so accounting can record provider costs without knowing engine classes.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

Outcome = Literal["ok", "error", "cancelled"]


@dataclass(frozen=True)
class UpstreamCall:
    provider: str
    model: str
    """The catalog id whose engine made the call."""
    upstream_model: str
    outcome: Outcome
    started: float
    """Unix time."""
    latency: float
    """Seconds, including retries, polling and downloads."""
    requests: int
    """HTTP requests made: attempts, polls and downloads."""
    retries: int
    images: int
    cost: float
    """``price_per_image`` (with its scales) times the images delivered; 0 when the call failed."""
    error: str | None = None
    """The limner error code when ``outcome`` is ``error``."""


CallObserver = Callable[[UpstreamCall], None]


@dataclass
class CallStats:
    """Counters filled in while one call runs."""

    requests: int = 0
    retries: int = 0


current_stats: ContextVar[CallStats] = ContextVar("limner_upstream_call")
"""Counters of the ``generate`` call in progress; fanned-out tasks share them (context is copied)."""


@runtime_checkable
class Observable(Protocol):
    def subscribe(self, observer: CallObserver) -> None: ...


def observe_calls(engine: object, observer: CallObserver) -> bool:
    """Subscribe ``observer`` to every upstream engine behind ``engine``; False when there is none."""
    from limner.engines.fallback import FallbackEngine

    if isinstance(engine, FallbackEngine):
        hooked = [observe_calls(inner, observer) for inner in engine.engines()]
        return any(hooked)
    if isinstance(engine, Observable):
        engine.subscribe(observer)
        return True
    return False
