"""DiffusersEngine reports where a call's time went (``GeneratedImage.timings``): up to the end of the last
denoising step, and the decode after it, for stock pipelines and limner's own alike."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers / huggingface_hub read it

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from limner.builtin.pipeline import EmojiDiffusionPipeline
from limner.builtin.train import build_unet, inference_scheduler
from limner.core.models import EngineRequest, Mode
from limner.engines import diffusers_engine
from limner.engines.diffusers_engine import DenoiseClock, DiffusersEngine, DiffusersSettings

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.fixture(scope="module")
def sd(sd_dir: Path) -> Iterator[DiffusersEngine]:
    engine = DiffusersEngine(DiffusersSettings(path=sd_dir, device="cpu", default_steps=2))
    yield engine
    asyncio.run(engine.aclose())


@pytest.fixture(scope="module")
def emoji(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DiffusersEngine]:
    path = tmp_path_factory.mktemp("tiny-emoji")
    torch.manual_seed(0)
    pipe: Any = EmojiDiffusionPipeline(build_unet(width=16), inference_scheduler())  # type: ignore[arg-type]
    pipe.save_pretrained(path)
    settings = DiffusersSettings(
        path=path, pipeline_class="limner.builtin.pipeline:EmojiDiffusionPipeline", native_size=(32, 32)
    )
    engine = DiffusersEngine(settings)
    yield engine
    asyncio.run(engine.aclose())


@pytest.mark.parametrize("name", ["sd", "emoji"])
async def test_each_image_carries_its_calls_denoise_and_decode_split(name: str, request: pytest.FixtureRequest) -> None:
    engine: DiffusersEngine = request.getfixturevalue(name)
    steps: list[tuple[int, int]] = []
    images = await engine.generate(
        EngineRequest(
            mode=Mode.GENERATE,
            prompt="a red circle",
            width=64,
            height=64,
            seeds=[1, 2],
            steps=2,
            progress=lambda done, total: steps.append((done, total)),
        )
    )
    timings = images[0].timings
    assert timings is not None and timings.denoise > 0 and timings.decode >= 0
    assert images[1].timings == timings, "one call, one split"
    assert steps == [(1, 2), (2, 2)], "the request's own progress callback still hears every step"


def test_the_clock_waits_for_the_accelerator_once_after_the_last_step(monkeypatch: pytest.MonkeyPatch) -> None:
    synchronized: list[Any] = []
    monkeypatch.setattr(diffusers_engine, "_synchronize", synchronized.append)
    heard: list[tuple[int, int]] = []
    clock = DenoiseClock(lambda done, total: heard.append((done, total)), "cuda:0")
    assert clock.timings(0.0, 1.0) is None, "no step reported: no split"
    for done in (1, 2, 3):
        clock(done, 3)
    assert heard == [(1, 3), (2, 3), (3, 3)] and synchronized == ["cuda:0"]
    assert clock.last_step is not None
    split = clock.timings(clock.last_step - 2.0, clock.last_step + 0.5)
    assert split is not None and split.denoise == pytest.approx(2.0) and split.decode == pytest.approx(0.5)
