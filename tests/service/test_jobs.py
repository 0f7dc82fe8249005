"""Jobs: state changes and their events, ETAs, the bounded registry, and the thread-safe reporter."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from PIL import Image

from limner.core.errors import ModelError, QueueFull, Timeout
from limner.core.models import ImageRequest, SizeSpec
from limner.service import jobs as jobs_module
from limner.service.jobs import Job, JobEvent, JobRegistry, Reporter
from tests.service.test_image_service import GatedEngine, RecordingEngine, make_service
from tests.support.clock import FakeClock
from tests.support.waiting import until


def test_a_job_moves_through_its_states_and_tells_its_listeners() -> None:
    job = Job("req-1", "alice", "pattern")
    kinds: list[str] = []
    job.listeners.append(lambda event: kinds.append(event.kind))
    job.queued(2)
    job.queued(2)  # no change, no event
    job.queued(1)
    assert (job.state, job.queue_position) == ("queued", 1)
    job.running()
    assert (job.state, job.queue_position) == ("running", None) and job.started_at is not None
    job.progress(1, 4)
    job.progress(3, 4)
    job.progress(2, 4)  # late report from a batch: never backwards
    assert (job.step, job.total_steps) == (3, 4)
    job.add_preview(3, [b"png"], "image/png", (8, 8))
    assert job.preview is not None and (job.preview.index, job.preview.size, job.preview_count) == (0, (8, 8), 1)
    job.finish("done")
    job.progress(4, 4)  # after the end: ignored
    assert kinds == ["queued", "queued", "running", "progress", "progress", "preview", "finished"]
    assert (job.state, job.step, job.eta_seconds()) == ("done", 4, 0.0)
    assert job.preview is None, "finished jobs keep no pixels"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The jobs module's ``time``, moved by hand: paces and ETAs computed exactly."""
    fake = FakeClock()
    monkeypatch.setattr(jobs_module, "time", fake)
    return fake


def test_eta_uses_the_models_pace_then_the_jobs_own(clock: FakeClock) -> None:
    job = Job("req-1", "alice", "pattern", total_steps=10, step_seconds=0.5, concurrency=2)
    assert job.eta_seconds() == pytest.approx(5.0), "queued but not yet in line: its own run"
    job.queued(4)
    assert job.eta_seconds() == pytest.approx(5.0 * (1 + 4 / 2)), "four ahead, two slots"
    job.running()
    clock.advance(2.0)
    job.progress(2, 10)
    assert job.step_seconds == pytest.approx(1.0), "its own pace replaces the model's"
    assert job.eta_seconds() == pytest.approx(8.0)
    clock.advance(3.0)
    assert job.eta_seconds() == pytest.approx(5.0), "the time since its last step counts down too"
    assert Job("x", "a", "m").eta_seconds() is None, "nothing known: no guess"
    job.finish("failed", "model_error")
    assert job.eta_seconds() is None and job.error == "model_error"


def test_registry_scopes_jobs_by_consumer_and_forgets_finished_ones() -> None:
    registry = JobRegistry(ttl=60, keep=2)
    mine = registry.open("shared-id-1", "alice", "pattern")
    theirs = registry.open("shared-id-1", "bob", "pattern")
    assert registry.get("alice", "shared-id-1") is mine and registry.get("bob", "shared-id-1") is theirs
    assert registry.get("carol", "shared-id-1") is None
    for index in range(3):
        registry.finish(registry.open(f"old-{index}", "alice", "pattern"))
    assert registry.get("alice", "old-0") is None, "only the last two finished jobs are kept"
    assert registry.get("alice", "old-2") is not None
    assert registry.get("alice", "shared-id-1") is mine, "running jobs are never dropped"
    registry.ttl = 0
    registry.finish(mine)
    assert registry.get("alice", "shared-id-1") is None and registry.get("alice", "old-2") is None


def test_a_reused_id_replaces_the_old_job_without_the_old_one_evicting_it() -> None:
    registry = JobRegistry(ttl=60, keep=1)
    first = registry.open("again-123", "alice", "pattern")
    second = registry.open("again-123", "alice", "pattern")
    registry.finish(first)
    registry.finish(registry.open("other-123", "alice", "pattern"))  # pushes `first` out of the kept list
    assert registry.get("alice", "again-123") is second


def test_finish_records_the_outcome_and_the_models_pace(clock: FakeClock) -> None:
    registry = JobRegistry()
    failed, cancelled, done = (registry.open(f"id-{n}", "a", "m") for n in range(3))
    registry.finish(failed, Timeout("slow"))
    registry.finish(cancelled, asyncio.CancelledError())
    assert (failed.state, failed.error, cancelled.state) == ("failed", "timeout", "cancelled")
    assert registry.step_seconds("m") is None
    done.total_steps = 4
    done.running()
    clock.advance(2.0)
    registry.finish(done)
    assert registry.step_seconds("m") == pytest.approx(0.5)
    waiting = registry.open("id-4", "a", "m")
    waiting.total_steps = 4
    registry.expect(waiting, concurrency=2)
    assert waiting.step_seconds == registry.step_seconds("m"), "a new job expects the model's recent pace"
    waiting.queued(2)
    assert waiting.eta_seconds() == pytest.approx(2.0 * (1 + 2 / 2))


async def test_reporter_crosses_from_worker_threads_and_spaces_previews() -> None:
    job = Job("req-1", "alice", "pattern")
    job.running()
    rendered: list[int] = []

    def render(image: Image.Image) -> tuple[bytes, str, tuple[int, int]]:
        rendered.append(threading.get_ident())
        return b"img", "image/png", (64, 64)

    steps: list[int] = []
    job.listeners.append(lambda event: steps.extend([event.preview.step] if event.preview else []))
    reporter = Reporter(job, asyncio.get_running_loop(), partials=2, every=3, render=render)
    images = [Image.new("RGB", (4, 4))]

    def engine() -> None:  # a diffusers worker thread: every step, previews offered every step
        for step in range(1, 11):
            reporter.progress(step, 10)
            reporter.preview(step, images)

    await asyncio.to_thread(engine)
    await asyncio.sleep(0)
    assert (job.step, job.total_steps) == (10, 10)
    assert steps == [3, 6] and job.preview_count == 2, "at most two, at least three steps apart"
    assert rendered and threading.get_ident() not in rendered, "encoding happens in the engine's thread"


async def test_service_tracks_the_job_and_its_place_in_line(tmp_path: Path) -> None:
    engine = GatedEngine()
    service = make_service(tmp_path, engine, max_concurrency=1, max_queue=2)
    jobs = service.jobs
    events: list[JobEvent] = []
    request = ImageRequest(prompt="x", model="rec", size=SizeSpec(64, 64))
    first = asyncio.create_task(service.run(request, "first-job"))
    await until(lambda: getattr(jobs.get("local", "first-job"), "state", None) == "running")
    second = asyncio.create_task(service.run(request, "second-job", listener=events.append))
    await until(lambda: getattr(jobs.get("local", "second-job"), "queue_position", None) == 1)
    third = asyncio.create_task(service.run(request, "third-job"))
    await until(lambda: getattr(jobs.get("local", "third-job"), "queue_position", None) == 2)
    running, second_job, third_job = (jobs.get("local", name) for name in ("first-job", "second-job", "third-job"))
    assert running is not None and running.state == "running" and running.model == "rec"
    assert second_job is not None and (second_job.state, second_job.queue_position) == ("queued", 1)
    assert third_job is not None and (third_job.state, third_job.queue_position) == ("queued", 2)
    with pytest.raises(QueueFull):
        await service.run(request, "refused-job")
    refused = jobs.get("local", "refused-job")
    assert refused is not None and (refused.state, refused.error) == ("failed", "queue_full")
    second.cancel()  # the second leaves the line: the third moves up
    await until(lambda: third_job.queue_position == 1)
    engine.gate.set()
    await asyncio.gather(first, third)
    assert [event.kind for event in events] == ["queued", "finished"] and second_job.state == "cancelled"
    assert third_job.state == "done" and third_job.finished_at is not None and third_job.queue_position is None


async def test_service_marks_failed_and_cancelled_jobs(tmp_path: Path) -> None:
    service = make_service(tmp_path, RecordingEngine(fail=True))
    with pytest.raises(ModelError):
        await service.run(ImageRequest(prompt="x", model="rec", size=SizeSpec(64, 64)), "failing-job")
    failed = service.jobs.get("local", "failing-job")
    assert failed is not None and (failed.state, failed.error) == ("failed", "model_error")

    slow = make_service(tmp_path / "slow", GatedEngine())
    task = asyncio.create_task(slow.run(ImageRequest(prompt="x", model="rec"), "leaving-job"))
    await until(lambda: getattr(slow.jobs.get("local", "leaving-job"), "state", None) == "running")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    cancelled = slow.jobs.get("local", "leaving-job")
    assert cancelled is not None and cancelled.state == "cancelled"
