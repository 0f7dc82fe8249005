"""A clock a test moves by hand, for code that takes one (``clock=``) or reads ``time.time()``."""

from __future__ import annotations


class FakeClock:
    """Stands in for ``time.monotonic`` (call it) or the ``time`` module (its ``time()``/``monotonic()``)."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
