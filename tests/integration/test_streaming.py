"""Progress over real HTTP on 127.0.0.1: OpenAI streaming through the official SDK, AI.ML's event
stream through httpx, and ``GET /v1/jobs/{id}`` polled while requests wait and run."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest
from openai.types import ImageEditCompletedEvent, ImageGenCompletedEvent, ImageGenPartialImageEvent
from PIL import Image

from limner.app import create_app
from limner.config.defaults import DIALECT_DEFAULT_ALIASES
from limner.core.errors import ModelError
from limner.engines.catalog import ModelEntry
from limner.settings import Settings
from tests.support.fakes import CONSUMER_HEADER, consumer_from_header, factories, raising
from tests.support.live_server import live_server

SLOW_STEPS = 10


@pytest.fixture
def server(settings: Settings) -> Iterator[str]:
    """Instant ``pattern``; ``slow`` takes ~0.15 s a step for 10 steps, one at a time; ``broken`` fails
    once it runs (after the stream has started). Consumers are named by ``X-Test-Consumer``."""
    models = [
        ModelEntry(id="pattern", engine="testpattern", aliases=list(DIALECT_DEFAULT_ALIASES), max_queue=64),
        ModelEntry(id="slow", engine="testpattern", options={"delay": 1.5}, default_steps=SLOW_STEPS, max_queue=4),
        ModelEntry(id="broken", engine="broken"),
    ]
    app = create_app(
        settings.with_overrides(models=models, default_model="pattern"),
        factories=factories(broken=raising(ModelError("The model failed: CUDA error: device-side assert."))),
    )
    consumer_from_header(app)
    with live_server(app) as url:
        yield url


@pytest.fixture
def client(server: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0) as sdk:
        yield sdk


def decode(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def sse_events(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a server-sent event stream; comments and blank lines skipped."""
    event, data = "", ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")
        elif not line and event:
            yield event, json.loads(data)
            event, data = "", ""


# --- OpenAI streaming through the SDK ---


def test_generate_streams_partial_images_then_the_final_image(client: openai.OpenAI) -> None:
    stream = client.images.generate(
        model="pattern",
        prompt="a red apple",
        stream=True,
        partial_images=3,
        size="96x64",
        output_format="webp",
        quality="high",
        extra_body={"steps": 8},
    )
    events = list(stream)
    assert [event.type for event in events] == ["image_generation.partial_image"] * 3 + ["image_generation.completed"]
    partials = [event for event in events if isinstance(event, ImageGenPartialImageEvent)]
    assert [event.partial_image_index for event in partials] == [0, 1, 2]
    for event in partials:
        assert (decode(event.b64_json).format, decode(event.b64_json).size) == ("WEBP", (96, 64))
        assert (event.size, event.quality, event.background, event.output_format) == ("96x64", "high", "auto", "webp")
    completed = events[-1]
    assert isinstance(completed, ImageGenCompletedEvent)
    final = decode(completed.b64_json)
    assert (final.format, final.size, completed.size) == ("WEBP", (96, 64), "96x64")
    assert completed.created_at > 1_700_000_000
    # OpenAI's image tokens at high quality: one per 16x16 pixels, rows x (columns + 1) = 4 x 7
    usage = completed.usage
    assert usage.output_tokens == 28 and usage.input_tokens == usage.input_tokens_details.text_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert decode(partials[0].b64_json).tobytes() != final.tobytes(), "a partial is rougher than the end"


def test_several_images_each_get_partials_and_a_completed_event(client: openai.OpenAI) -> None:
    events = list(
        client.images.generate(model="pattern", prompt="a cat", n=2, stream=True, partial_images=1, size="32x32")
    )
    kinds = [(event.type, getattr(event, "partial_image_index", None)) for event in events]
    assert kinds == [("image_generation.partial_image", 0)] * 2 + [("image_generation.completed", None)] * 2
    finals = [decode(event.b64_json) for event in events[2:]]
    assert finals[0].tobytes() != finals[1].tobytes(), "each image has its own seed"


def test_without_partial_images_only_the_completed_event(client: openai.OpenAI) -> None:
    events = list(client.images.generate(model="pattern", prompt="a dog", stream=True, size="64x64"))
    assert [event.type for event in events] == ["image_generation.completed"]
    assert decode(events[0].b64_json).format == "PNG"


def test_edits_stream_too(client: openai.OpenAI) -> None:
    source = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(source, "PNG")
    events = list(
        client.images.edit(
            model="pattern",
            image=("source.png", source.getvalue(), "image/png"),
            prompt="make it blue",
            size="48x48",
            stream=True,
            partial_images=2,
        )
    )
    assert [event.type for event in events] == ["image_edit.partial_image"] * 2 + ["image_edit.completed"]
    assert isinstance(events[-1], ImageEditCompletedEvent)
    assert decode(events[-1].b64_json).size == (48, 48) and decode(events[0].b64_json).size == (48, 48)


def test_errors_before_the_stream_starts_are_ordinary_json_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.images.generate(model="no-such-model", prompt="x", stream=True)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as too_many:
        client.images.generate(model="pattern", prompt="x", stream=True, partial_images=4)
    assert too_many.value.param == "partial_images"


def test_an_error_after_the_stream_started_is_an_error_event(client: openai.OpenAI, server: str) -> None:
    stream = client.images.generate(model="broken", prompt="x", stream=True, partial_images=1)
    with pytest.raises(openai.APIError, match="device-side assert") as failure:
        list(stream)
    assert not isinstance(failure.value, openai.APIStatusError), "the stream had started: status 200"
    assert isinstance(failure.value.body, dict) and failure.value.body["code"] == "model_error"
    with httpx.stream(
        "POST", server + "/v1/images/generations", json={"model": "broken", "prompt": "x", "stream": True}
    ) as raw:
        assert raw.status_code == 200 and raw.headers["content-type"].startswith("text/event-stream")
        [(event, data)] = list(sse_events(raw))
    assert event == "error" and data["type"] == "error"
    assert data["error"] == {
        "message": "The model failed: CUDA error: device-side assert.",
        "type": "server_error",
        "param": None,
        "code": "model_error",
    }


# --- AI.ML streaming through httpx ---


def aiml_stream(server: str, **fields: Any) -> tuple[httpx.Headers, list[tuple[str, dict[str, Any]]]]:
    body = {"model": "image-gen.pro-1.0", "prompt": "a forest", "stream": True, **fields}
    with httpx.stream("POST", server + "/v1/generation/images", json=body, timeout=60) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return response.headers, list(sse_events(response))


def test_aiml_streams_progress_then_the_non_streaming_body(server: str) -> None:
    headers, events = aiml_stream(server, model="slow", response_format="b64_json", size="1K")
    *progress, (last, final) = events
    assert last == "completed" and set(final) == {"data"} and set(final["data"]["image"]) == {"b64_json"}
    assert decode(final["data"]["image"]["b64_json"]).size == (1024, 1024)
    assert {event for event, _ in progress} == {"progress"}
    steps = [data["step"] for _, data in progress]
    assert steps == sorted(steps) and len(set(steps)) >= 3, "one event per step, as they happen"
    assert all(data["id"] == headers["x-request-id"] and data["model"] == "slow" for _, data in progress)
    assert progress[-1][1]["total_steps"] == SLOW_STEPS and progress[-1][1]["status"] == "running"


def test_aiml_stream_errors(server: str) -> None:
    _, events = aiml_stream(server, model="broken")
    assert events[-1][0] == "error" and events[-1][1]["error"]["code"] == "model_error"
    response = httpx.post(server + "/v1/generation/images", json={"model": "nope", "prompt": "x", "stream": True})
    assert response.status_code == 400 and response.json()["error"]["code"] == "model_not_found"


# --- the job status endpoint ---


def job(server: str, request_id: str, consumer: str = "local") -> httpx.Response:
    return httpx.get(f"{server}/v1/jobs/{request_id}", headers={CONSUMER_HEADER: consumer})


def start(pool: ThreadPoolExecutor, server: str, request_id: str, model: str = "slow") -> Future[httpx.Response]:
    return pool.submit(
        httpx.post,
        server + "/v1/images/generations",
        json={"model": model, "prompt": "a lighthouse", "size": "64x64", "response_format": "b64_json"},
        headers={"X-Request-Id": request_id},
        timeout=60,
    )


def poll(server: str, request_id: str, until: Callable[[dict[str, Any]], bool], timeout: float = 20) -> list[dict]:
    """Every status seen (each change of state, place or step) until ``until`` holds for the last."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = job(server, request_id)
        if response.status_code == 200:
            status = response.json()
            if not seen or any(status[key] != seen[-1][key] for key in ("status", "queue_position", "step")):
                seen.append(status)
            if until(status):
                seen[-1] = status
                return seen
        time.sleep(0.02)
    raise AssertionError(f"job {request_id} never got there: {seen}")


def test_a_client_picks_the_id_and_polls_its_running_job(server: str) -> None:
    with ThreadPoolExecutor(2) as pool:
        result = start(pool, server, "poll-me-0001")
        seen = poll(server, "poll-me-0001", lambda status: status["status"] == "done")
        response = result.result()
    assert response.status_code == 200 and response.headers["x-request-id"] == "poll-me-0001"
    running = [status for status in seen if status["status"] == "running"]
    assert len({status["step"] for status in running}) >= 3, f"the step advances while it runs: {seen}"
    assert all(status["total_steps"] == SLOW_STEPS for status in running)
    assert any(status["eta_seconds"] is not None and status["eta_seconds"] > 0 for status in running)
    done = seen[-1]
    assert (done["step"], done["eta_seconds"], done["queue_position"]) == (SLOW_STEPS, 0.0, None)
    assert done["created_at"] <= done["started_at"] <= done["finished_at"]
    assert set(done) == {
        "id", "model", "status", "queue_position", "step", "total_steps", "eta_seconds",
        "created_at", "started_at", "finished_at",
    }  # fmt: skip


def test_a_waiting_job_shows_its_place_in_line(server: str) -> None:
    with ThreadPoolExecutor(3) as pool:
        first = start(pool, server, "first-in-line")
        poll(server, "first-in-line", lambda status: status["status"] == "running")
        second = start(pool, server, "second-in-line")
        waiting = poll(server, "second-in-line", lambda status: status["queue_position"] is not None)[-1]
        assert (waiting["status"], waiting["queue_position"], waiting["started_at"]) == ("queued", 1, None)
        assert waiting["eta_seconds"] is None or waiting["eta_seconds"] > 0
        after = poll(server, "second-in-line", lambda status: status["status"] != "queued")[-1]
        assert after["status"] in ("running", "done") and after["queue_position"] is None
        assert first.result().status_code == 200 and second.result().status_code == 200
    assert job(server, "first-in-line").json()["status"] == "done"


def test_only_the_owner_sees_a_job(server: str) -> None:
    made = httpx.post(
        server + "/v1/images/generations",
        json={"model": "pattern", "prompt": "x", "size": "32x32"},
        headers={CONSUMER_HEADER: "alice", "X-Request-Id": "alices-job-1"},
    )
    assert made.status_code == 200
    assert job(server, "alices-job-1", "alice").json()["status"] == "done"
    for response in (job(server, "alices-job-1", "bob"), job(server, "never-was-a-job")):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
        assert response.json()["error"]["type"] == "invalid_request_error"


def test_the_newest_partial_image_can_be_fetched_while_the_job_runs(server: str) -> None:
    body = {"model": "slow", "prompt": "a moon", "stream": True, "partial_images": 3, "size": "48x48"}
    with httpx.stream(
        "POST", server + "/v1/images/generations", json=body, headers={"X-Request-Id": "with-previews-1"}, timeout=30
    ) as response:
        indexes = []
        for event, data in sse_events(response):
            if event == "image_generation.partial_image":
                indexes.append(data["partial_image_index"])
                preview = httpx.get(server + "/v1/jobs/with-previews-1/preview")
                assert preview.status_code == 200 and preview.headers["content-type"] == "image/png"
                assert Image.open(io.BytesIO(preview.content)).size == (48, 48)
                other = httpx.get(server + "/v1/jobs/with-previews-1/preview", headers={CONSUMER_HEADER: "bob"})
                assert other.status_code == 404
    assert indexes == [0, 1, 2]
    assert httpx.get(server + "/v1/jobs/with-previews-1/preview").status_code == 404, "none kept after the end"


def test_a_stream_whose_client_leaves_cancels_its_job(server: str) -> None:
    body = {"model": "slow", "prompt": "x", "stream": True, "size": "32x32"}
    headers = {"X-Request-Id": "leaving-early-1"}
    got_running = threading.Event()
    with httpx.stream("POST", server + "/v1/generation/images", json=body, headers=headers, timeout=30) as response:
        for event, data in sse_events(response):
            if event == "progress" and data["step"] >= 1:
                got_running.set()
                break
    assert got_running.is_set()
    final = poll(server, "leaving-early-1", lambda status: status["status"] not in ("queued", "running"))[-1]
    assert final["status"] == "cancelled" and final["step"] < SLOW_STEPS
    assert final["finished_at"] is not None
