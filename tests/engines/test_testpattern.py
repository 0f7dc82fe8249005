"""The test-pattern engine pretends to denoise: progress per step, coarse-to-fine previews, same pixels."""

from __future__ import annotations

import time
from dataclasses import replace

from PIL import Image

from limner.core.models import EngineRequest, Mode
from limner.engines.testpattern import TestPatternEngine, pattern


def request(**extra: object) -> EngineRequest:
    return EngineRequest(mode=Mode.GENERATE, prompt="a cat", width=48, height=32, seeds=[1, 2], **extra)  # type: ignore[arg-type]


async def test_steps_report_progress_and_previews_sharpen() -> None:
    progress: list[tuple[int, int]] = []
    previews: list[tuple[int, list[Image.Image]]] = []
    engine = TestPatternEngine()
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
    colours = [len(set(shown[0].getdata())) for _, shown in previews]
    assert colours[0] <= colours[1] <= len(set(images[0].image.getdata())), "coarse to fine"
    assert images[0].image.tobytes() == pattern("a cat", 1, 48, 32).tobytes(), "previews change no pixels"


async def test_delay_is_spread_over_the_steps() -> None:
    engine = TestPatternEngine(delay=0.2)
    steps: list[float] = []
    started = time.monotonic()
    await engine.generate(replace(request(steps=4), progress=lambda step, total: steps.append(time.monotonic())))
    assert time.monotonic() - started >= 0.2
    assert steps[0] - started < 0.15, "the first step reports before the whole delay is over"
