"""``RunningJob``: errors before acceptance are raised, then events, heartbeats and the outcome in order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from limner.core.errors import ModelError, ModelNotFound
from limner.core.models import ImageRequest, ImageResult, SizeSpec
from limner.http.streaming import sse, start_job
from limner.service.jobs import JobEvent
from tests.service.test_image_service import RecordingEngine, make_service
from tests.service.test_jobs import GatedEngine


def test_sse_is_one_event_line_and_one_compact_data_line() -> None:
    assert sse("progress", {"step": 1, "id": "x"}) == b'event: progress\ndata: {"step":1,"id":"x"}\n\n'
    assert json.loads(sse("e", {"text": "two\nlines"}).split(b"data: ")[1]) == {"text": "two\nlines"}


async def test_errors_before_acceptance_are_raised_by_start(tmp_path: Path) -> None:
    service = make_service(tmp_path, RecordingEngine())
    with pytest.raises(ModelNotFound):
        await start_job(service, ImageRequest(prompt="x", model="nope"), "early-error")


async def test_events_heartbeats_then_the_result(tmp_path: Path) -> None:
    engine = GatedEngine()
    service = make_service(tmp_path, engine)
    running = await start_job(
        service, ImageRequest(prompt="x", model="rec", size=SizeSpec(64, 64)), "streamed-1", heartbeat=0.05
    )
    items: list[JobEvent | ImageResult | None] = []
    async for item in running:
        items.append(item)
        if sum(entry is None for entry in items) == 2:
            engine.gate.set()  # two quiet intervals, then let it finish
    kinds = [item.kind if isinstance(item, JobEvent) else item for item in items]
    assert kinds[0] == "running" and kinds[1:3] == [None, None]
    assert kinds[-2] == "finished" and isinstance(items[-1], ImageResult)


async def test_a_failure_after_acceptance_is_raised_at_the_end(tmp_path: Path) -> None:
    service = make_service(tmp_path, RecordingEngine(fail=True))
    running = await start_job(service, ImageRequest(prompt="x", model="rec", size=SizeSpec(64, 64)), "late")
    with pytest.raises(ModelError):
        async for _ in running:
            pass


async def test_cancel_stops_the_job(tmp_path: Path) -> None:
    service = make_service(tmp_path, GatedEngine())
    running = await start_job(service, ImageRequest(prompt="x", model="rec"), "left-early")
    await running.cancel()
    job = service.jobs.get("local", "left-early")
    assert running.task.cancelled() and job is not None and job.state == "cancelled"
