"""Wait for a state change instead of sleeping for a guessed time.

Tests poll a predicate until it holds; the deadline is a generous safety net that turns a hang into
a clear failure, never the thing a test measures, so a slow or busy machine only makes tests slower.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

DEADLINE = 10.0
"""Seconds before a wait gives up: far longer than any state change a test waits for should take."""


def wait_until(predicate: Callable[[], object], timeout: float = DEADLINE, *, what: str = "the condition") -> None:
    """Block (a test thread talking to a live server) until ``predicate()`` is truthy."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout:g} s")
        time.sleep(0.02)


async def until(predicate: Callable[[], object], timeout: float = DEADLINE, *, what: str = "the condition") -> None:
    """Yield to the event loop until ``predicate()`` is truthy (the loop keeps running what is awaited)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout:g} s")
        await asyncio.sleep(0.01)
