"""What keeps a failing provider from failing limner: a circuit breaker, backoff that honours
``Retry-After``, and scrubbing of anything secret from the messages providers send back."""

from __future__ import annotations

import email.utils
import random
import re
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

MESSAGE_LIMIT = 300
"""Longest upstream message shown to clients: enough to explain, too short to carry a payload."""
_SECRET_PATTERNS = (
    re.compile(r"(?i)\b(bearer|basic)\s+[^\s,;\"']+"),
    re.compile(
        r"(?i)\b(api[_-]?key|x-key|x-goog-api-key|key|token|secret|password|authorization)\b"
        r"[\"']?\s*[=:]\s*[\"']?[^\s,;\"']{4,}"
    ),
    re.compile(r"\bsk-[A-Za-z0-9_*.-]{6,}"),
    re.compile(r"\bAIza[0-9A-Za-z_*-]{10,}"),
    re.compile(r"\b[A-Za-z0-9_+/=-]{32,}\b"),
)
"""Bearer values, ``key=...`` pairs, OpenAI and Google key shapes, and any long opaque token."""
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with known secrets and anything shaped like a credential replaced, then shortened."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub("[redacted]", text)
    text = _CONTROL.sub(" ", text).strip()
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.fromtimestamp(now(), UTC)).total_seconds())


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with "equal jitter": half the step fixed, half random, so retries from
    many requests spread out but never retry at once."""
    step = min(cap, base * 2 ** max(0, attempt - 1))
    return step / 2 + random.uniform(0, step / 2)


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures and refuses calls for ``cooldown`` seconds.

    Then it is half-open: one call goes through as a probe; its success closes the breaker, its
    failure opens it again at once. Only provider-side failures count (5xx, 429, connection errors,
    timeouts): a provider that answers 400 to a bad prompt is healthy.
    """

    def __init__(self, threshold: int = 5, cooldown: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = max(1, threshold)
        self.cooldown = cooldown
        self.failures = 0
        self._clock = clock
        self._open_until = 0.0
        self._probing = False

    def blocked_for(self) -> float:
        """Seconds until a call may go through; 0 lets this call through (as the probe, if half-open)."""
        if self.failures < self.threshold:
            return 0.0
        remaining = self._open_until - self._clock()
        if remaining > 0:
            return remaining
        if self._probing:
            return max(1.0, self.cooldown / 10)
        self._probing = True
        return 0.0

    @property
    def is_open(self) -> bool:
        return self.failures >= self.threshold and self._open_until > self._clock()

    def success(self) -> None:
        self.failures = 0
        self._probing = False

    def failure(self) -> None:
        self.failures += 1
        self._probing = False
        if self.failures >= self.threshold:
            self._open_until = self._clock() + self.cooldown
