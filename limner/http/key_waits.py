"""Requests waiting for the first request with their ``Idempotency-Key`` (``limner.http.durable``).

A duplicate that arrives while the first request runs waits for its end rather than running again. On
the replica that runs the first, that end is an in-process notification: the first request calls
``changed(consumer, key)`` once its row is stored or freed, and every waiter wakes at once, so nothing
reads the database while it waits. (Replicas share no channel but the database; a waiter whose first
request runs elsewhere reads the row again, with a backoff: see ``durable``.)

Waiters are bounded, on each replica, per key and per consumer: a duplicate past either bound is
refused with ``IdempotencyKeyInUse`` (409, ``Retry-After``), so retries cannot pile up without limit.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from limner.core.errors import IdempotencyKeyInUse

RETRY_SECONDS = 5
"""``Retry-After`` of a duplicate refused while the first request still runs."""


@dataclass
class _Key:
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set (and replaced) each time the first request's row is stored or freed."""
    watchers: int = 0
    waiting: int = 0


class Watch:
    """One request's hold on its key's notification, from before it reads the key's row until it is done."""

    def __init__(self, waits: KeyWaits, consumer: str, key: str, entry: _Key) -> None:
        self.waits = waits
        self.consumer = consumer
        self.key = key
        self.entry = entry

    def mark(self) -> asyncio.Event:
        """The event the next change sets: take it *before* reading the row, so a change in between is not missed."""
        return self.entry.changed

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """Count this request as a waiter for as long as it waits, or refuse it past a bound (409)."""
        waits = self.waits
        if self.entry.waiting >= waits.per_key:
            raise IdempotencyKeyInUse(
                f"The first request with Idempotency-Key '{self.key}' is still running, with as many retries "
                f"waiting for it as allowed ({waits.per_key}); retry in {RETRY_SECONDS} s.",
                param="Idempotency-Key",
                retry_after=RETRY_SECONDS,
            )
        if waits.consumers[self.consumer] >= waits.per_consumer:
            raise IdempotencyKeyInUse(
                f"You have as many retries waiting for still-running requests with their Idempotency-Key as "
                f"one consumer may ({waits.per_consumer}); retry in {RETRY_SECONDS} s.",
                param="Idempotency-Key",
                retry_after=RETRY_SECONDS,
            )
        self.entry.waiting += 1
        waits.consumers[self.consumer] += 1
        try:
            yield
        finally:
            self.entry.waiting -= 1
            waits.consumers[self.consumer] -= 1
            if not waits.consumers[self.consumer]:
                del waits.consumers[self.consumer]


class KeyWaits:
    """Each (consumer, key) that requests on this replica hold, with its notification and its waiters."""

    def __init__(self, per_key: int, per_consumer: int) -> None:
        self.per_key = per_key
        self.per_consumer = per_consumer
        self.keys: dict[tuple[str, str], _Key] = {}
        self.consumers: Counter[str] = Counter()

    @contextmanager
    def watch(self, consumer: str, key: str) -> Iterator[Watch]:
        """Hold the key's notification while a request opens, runs or waits for it."""
        entry = self.keys.setdefault((consumer, key), _Key())
        entry.watchers += 1
        try:
            yield Watch(self, consumer, key, entry)
        finally:
            entry.watchers -= 1
            if not entry.watchers:
                del self.keys[(consumer, key)]

    def changed(self, consumer: str, key: str) -> None:
        """The key's row was stored or freed here: wake its waiters (they read it once, then replay or retry)."""
        entry = self.keys.get((consumer, key))
        if entry is not None:
            entry.changed.set()
            entry.changed = asyncio.Event()

    def count(self, consumer: str, key: str | None = None) -> int:
        """Requests now waiting: for one key, or for all of a consumer's keys."""
        if key is None:
            return self.consumers[consumer]
        entry = self.keys.get((consumer, key))
        return entry.waiting if entry is not None else 0
