"""The model's line: higher priority first, ageing so a low priority is never starved, and start deadlines."""

from __future__ import annotations

import asyncio

import pytest

from limner.core.errors import QueueFull, StartDeadlineExceeded
from limner.engines import slots as slots_module
from limner.engines.slots import ModelSlots


async def _run_in_order(slots: ModelSlots, priorities: list[int], order: list[int]) -> None:
    """Hold the one slot, line up waiters with ``priorities`` (in that order), then let them all through."""
    started = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with slots.acquire():
            started.set()
            await release.wait()

    async def waiter(index: int, priority: int) -> None:
        async with slots.acquire(priority=priority):
            order.append(index)

    holding = asyncio.create_task(holder())
    await started.wait()
    waiting = []
    for index, priority in enumerate(priorities):
        waiting.append(asyncio.create_task(waiter(index, priority)))
        await asyncio.sleep(0)
    release.set()
    await asyncio.gather(holding, *waiting)


async def test_higher_priority_goes_first_and_equal_priority_keeps_arrival_order() -> None:
    order: list[int] = []
    await _run_in_order(ModelSlots("m"), [0, 0, 5, 1, 5], order)
    assert order == [2, 4, 3, 0, 1]


async def test_waiting_earns_priority_so_low_priority_is_not_starved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slots_module, "AGEING_SECONDS", 0.01)  # a level every 10 ms
    slots = ModelSlots("m")
    order: list[int] = []
    started, release = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with slots.acquire():
            started.set()
            await release.wait()

    async def waiter(index: int, priority: int) -> None:
        async with slots.acquire(priority=priority):
            order.append(index)

    holding = asyncio.create_task(holder())
    await started.wait()
    old = asyncio.create_task(waiter(0, 0))
    await asyncio.sleep(0.2)  # 20 levels of waiting
    new = asyncio.create_task(waiter(1, 5))
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(holding, old, new)
    assert order == [0, 1]


async def test_positions_follow_priority() -> None:
    slots = ModelSlots("m")
    seen: dict[str, list[int]] = {"low": [], "high": []}
    started, release = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with slots.acquire():
            started.set()
            await release.wait()

    async def waiter(name: str, priority: int) -> None:
        async with slots.acquire(on_position=seen[name].append, priority=priority):
            pass

    holding = asyncio.create_task(holder())
    await started.wait()
    low = asyncio.create_task(waiter("low", 0))
    await asyncio.sleep(0)
    high = asyncio.create_task(waiter("high", 3))
    await asyncio.sleep(0)
    assert seen == {"low": [1, 2], "high": [1]}, "the urgent request went ahead of the waiting one"
    release.set()
    await asyncio.gather(holding, low, high)
    assert seen["low"][-1] == 1


async def test_a_start_deadline_ends_the_wait_and_frees_its_place() -> None:
    slots = ModelSlots("m", max_queue=1)
    started, release = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with slots.acquire():
            started.set()
            await release.wait()

    holding = asyncio.create_task(holder())
    await started.wait()
    loop = asyncio.get_running_loop()
    with pytest.raises(StartDeadlineExceeded, match="did not start before its start deadline"):
        async with slots.acquire(start_by=loop.time() + 0.05):
            pass
    assert slots.waiting == 0
    late = asyncio.create_task(_enter(slots))
    await asyncio.sleep(0)
    with pytest.raises(QueueFull):
        await _enter(slots)
    release.set()
    await asyncio.gather(holding, late)
    assert slots.running == 0 and slots.waiting == 0


async def test_a_free_slot_starts_at_once_whatever_the_deadline() -> None:
    slots = ModelSlots("m")
    loop = asyncio.get_running_loop()
    async with slots.acquire(start_by=loop.time() - 1):
        assert slots.running == 1


async def _enter(slots: ModelSlots) -> None:
    async with slots.acquire():
        await asyncio.sleep(0)
