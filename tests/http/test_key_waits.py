"""``KeyWaits``: the notification a key's first request gives its waiters, and the bounds on waiters."""

from __future__ import annotations

import asyncio

import pytest

from limner.core.errors import IdempotencyKeyInUse
from limner.http.key_waits import KeyWaits


def test_a_change_wakes_the_event_taken_before_it_and_no_later_one() -> None:
    async def scenario() -> None:
        waits = KeyWaits(per_key=2, per_consumer=4)
        with waits.watch("alice", "k") as watch:
            before = watch.mark()
            waits.changed("alice", "k")
            waits.changed("bob", "k")  # another consumer's key of the same name: nobody here
            assert before.is_set()
            after = watch.mark()
            assert not after.is_set(), "the next change needs a new event"
            await asyncio.wait_for(before.wait(), 1)
        assert waits.keys == {}, "forgotten once nobody holds it"
        waits.changed("alice", "k")  # nobody watching: nothing to wake, nothing kept

    asyncio.run(scenario())


def test_waiters_past_the_bound_per_key_or_per_consumer_are_refused() -> None:
    waits = KeyWaits(per_key=1, per_consumer=2)
    with waits.watch("alice", "a") as a, waits.watch("alice", "b") as b, waits.watch("alice", "c") as c:
        with a.waiting(), b.waiting():
            assert (waits.count("alice"), waits.count("alice", "a")) == (2, 1)
            with pytest.raises(IdempotencyKeyInUse) as per_key, a.waiting():
                pass
            assert per_key.value.message == (
                "The first request with Idempotency-Key 'a' is still running, with as many retries waiting for it "
                "as allowed (1); retry in 5 s."
            )
            with pytest.raises(IdempotencyKeyInUse) as per_consumer, c.waiting():
                pass
            assert per_consumer.value.message == (
                "You have as many retries waiting for still-running requests with their Idempotency-Key as one "
                "consumer may (2); retry in 5 s."
            )
            assert per_consumer.value.details == {"retry_after": 5}
            with waits.watch("bob", "a") as bobs, bobs.waiting():
                assert waits.count("bob") == 1, "another consumer has bounds of its own"
        assert waits.count("alice") == 0 and not waits.consumers
        with c.waiting():
            assert waits.count("alice", "c") == 1
