"""Per-stage timings: ``limner_stage_seconds`` after requests through the HTTP app, and what the service tells
its stage observer (the engine's own denoise/decode split where it gives one, nothing for failed requests)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from limner.app import create_app
from limner.core.errors import ModelError
from limner.core.models import Capabilities, EngineRequest, EngineTimings, GeneratedImage, ImageRequest, SizeSpec
from limner.engines.base import Engine
from limner.engines.catalog import Catalog, ModelEntry
from limner.engines.registry import default_factories
from limner.media.inputs import ImageDecoder, ImageFetcher, ImageLoader
from limner.media.signing import UrlSigner
from limner.media.store import LocalMediaStore
from limner.service.image_service import ImageService, ServiceOptions
from limner.service.media_access import MediaAccess
from limner.service.metrics import STAGES
from limner.settings import Settings

SPLIT = EngineTimings(denoise=1000.0, decode=500.0)
"""Far longer than any call here takes: the rest of the call, reported as ``engine``, is clamped at 0."""


class TimedEngine(Engine):
    """Answers at once, reporting a fixed denoise/decode split (or none, or fails)."""

    capabilities = Capabilities(min_side=16)

    def __init__(self, timings: EngineTimings | None = SPLIT, fail: bool = False) -> None:
        self.timings = timings
        self.fail = fail

    async def generate(self, request: EngineRequest) -> list[GeneratedImage]:
        if self.fail:
            raise RuntimeError("out of memory")
        size = (request.width, request.height)
        return [
            GeneratedImage(Image.new("RGB", size, (seed % 256, 9, 9)), seed, timings=self.timings)
            for seed in request.seeds
        ]


def stage_counts(client: TestClient) -> dict[tuple[str, str], tuple[float, float]]:
    """(model, stage) -> (count, sum) of ``limner_stage_seconds`` as ``/metrics`` shows it."""
    found: dict[tuple[str, str], list[float]] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        if family.name != "limner_stage_seconds":
            continue
        for sample in family.samples:
            key = (sample.labels["model"], sample.labels["stage"])
            if sample.name.endswith("_count"):
                found.setdefault(key, [0.0, 0.0])[0] = sample.value
            elif sample.name.endswith("_sum"):
                found.setdefault(key, [0.0, 0.0])[1] = sample.value
    return {key: (value[0], value[1]) for key, value in found.items()}


def generate(client: TestClient, model: str, n: int = 1) -> None:
    body = {"model": model, "prompt": "a fox", "n": n, "size": "64x64", "response_format": "b64_json"}
    response = client.post("/v1/images/generations", json=body)
    assert response.status_code == 200, response.text


def test_every_stage_is_timed_once_per_request_through_http(settings: Settings) -> None:
    timed = ModelEntry(id="timed", engine="timed")
    app = create_app(
        settings.with_overrides(models=[*settings.models, timed]),
        factories={**default_factories(), "timed": lambda _: TimedEngine()},
    )
    with TestClient(app) as client:
        assert not stage_counts(client)
        generate(client, "pattern", n=2)
        generate(client, "pattern")
        generate(client, "timed")
        counts = stage_counts(client)
    without_split = {stage for stage in STAGES if stage not in ("denoise", "decode")}
    assert {stage for model, stage in counts if model == "pattern"} == without_split, "no split: not reported"
    assert {stage for model, stage in counts if model == "timed"} == set(STAGES)
    assert all(count == 2 for (model, _), (count, _) in counts.items() if model == "pattern"), "per request, not image"
    assert all(count == 1 for (model, _), (count, _) in counts.items() if model == "timed")
    assert all(seconds >= 0 for _, seconds in counts.values())
    assert counts[("pattern", "encode")][1] > 0
    assert counts[("timed", "denoise")][1] == SPLIT.denoise and counts[("timed", "decode")][1] == SPLIT.decode


def service(tmp_path: Path, engine: Engine, observed: list[tuple[str, Mapping[str, float]]]) -> ImageService:
    catalog = Catalog([ModelEntry(id="timed", engine="timed")], {**default_factories(), "timed": lambda _: engine})
    media = MediaAccess(LocalMediaStore(tmp_path / "media"), UrlSigner(b"k" * 32))
    loader = ImageLoader(ImageDecoder(), ImageFetcher())
    return ImageService(
        catalog, media, loader, ServiceOptions(), stages=lambda model, seconds: observed.append((model, seconds))
    )


async def test_the_engine_split_is_reported_and_the_rest_of_its_call_is_engine(tmp_path: Path) -> None:
    observed: list[tuple[str, Mapping[str, float]]] = []
    await service(tmp_path, TimedEngine(), observed).run(
        ImageRequest(prompt="x", model="timed", n=3, size=SizeSpec(96, 64)), "r"
    )
    [(model, seconds)] = observed
    assert model == "timed" and list(seconds) == list(STAGES), "every stage, in order"
    assert seconds["denoise"] == SPLIT.denoise and seconds["decode"] == SPLIT.decode
    assert seconds["engine"] == 0.0, "an engine reporting more than its call took: the rest is clamped at 0"
    assert all(value >= 0 for value in seconds.values())


async def test_engines_without_a_split_report_their_whole_call_as_engine(tmp_path: Path) -> None:
    observed: list[tuple[str, Mapping[str, float]]] = []
    await service(tmp_path, TimedEngine(timings=None), observed).run(ImageRequest(prompt="x", model="timed"), "r")
    [(_, seconds)] = observed
    assert "denoise" not in seconds and "decode" not in seconds and seconds["engine"] >= 0


async def test_failed_requests_are_not_timed(tmp_path: Path) -> None:
    observed: list[tuple[str, Mapping[str, float]]] = []
    with pytest.raises(ModelError):
        await service(tmp_path, TimedEngine(fail=True), observed).run(ImageRequest(prompt="x", model="timed"), "r")
    await asyncio.sleep(0)
    assert observed == []
