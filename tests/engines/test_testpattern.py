"""The test-pattern engine pretends to denoise: progress per step, coarse-to-fine previews, same pixels."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from types import SimpleNamespace

import pytest
from PIL import Image

from limner.core.models import EngineRequest, Mode
from limner.engines import testpattern
from limner.engines.testpattern import TestPatternEngine as PatternEngine
from limner.engines.testpattern import pattern


def request(**extra: object) -> EngineRequest:
    return EngineRequest(mode=Mode.GENERATE, prompt="a cat", width=48, height=32, seeds=[1, 2], **extra)  # type: ignore[arg-type]


def colour_count(image: Image.Image) -> int:
    return len(image.getcolors(image.width * image.height) or [])


async def test_steps_report_progress_and_previews_sharpen() -> None:
    progress: list[tuple[int, int]] = []
    previews: list[tuple[int, list[Image.Image]]] = []
    engine = PatternEngine()
    images = await engine.generate(
        request(
            steps=6,
            progress=lambda step, total: progress.append((step, total)),
            preview=lambda step, shown: previews.append((step, shown)),
            preview_every=2,
        )
    )
    assert progress == [(step, 6) for step in range(1, 7)]
    assert [step for step, _ in previews] == [2, 4], "never after the last step"
    assert all(len(shown) == 2 and shown[0].size == (48, 32) for _, shown in previews)
    colours = [colour_count(shown[0]) for _, shown in previews]
    assert colours[0] <= colours[1] <= colour_count(images[0].image), "coarse to fine"
    assert images[0].image.tobytes() == pattern("a cat", 1, 48, 32).tobytes(), "previews change no pixels"


async def test_delay_is_spread_over_the_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    timeline: list[tuple[str, float]] = []

    async def sleep(seconds: float) -> None:  # records what the engine waits, without waiting it
        timeline.append(("sleep", seconds))
        await asyncio.sleep(0)

    monkeypatch.setattr(testpattern, "asyncio", SimpleNamespace(sleep=sleep))  # this module's asyncio only
    engine = PatternEngine(delay=0.2)
    await engine.generate(replace(request(steps=4), progress=lambda step, total: timeline.append(("step", step))))
    assert timeline == [entry for step in range(1, 5) for entry in (("sleep", 0.05), ("step", step))], (
        "a quarter of the delay before each step's report, not all of it up front"
    )
