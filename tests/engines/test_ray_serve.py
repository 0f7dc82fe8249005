"""Models on Ray Serve, against a real local Ray instance on CPU: the built-in model answers through a
deployment handle with the same pixels as in-process and reports each step and its previews (through
Serve's streaming responses, also as OpenAI partial images), a client that leaves cancels the replica's
work, Ray's backpressure is limner's 429, a killed replica is replaced by Ray while requests keep working, and
a request's trace continues into the replica."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.trace import SpanKind
from PIL import Image, ImageChops

from limner.app import build_state, create_app
from limner.core.errors import QueueFull
from limner.core.models import EngineRequest, ImageRequest, Mode, SizeSpec
from limner.engines.catalog import ModelEntry
from limner.engines.ray_serve import RayServeEngine, app_name, connect
from limner.engines.registry import default_factories
from limner.settings import Settings
from tests.support.images import pixels
from tests.support.live_server import live_server
from tests.support.tracing import exported, named, otlp_receiver, recorded_spans, span_id, trace_id
from tests.support.waiting import until, wait_until

ray = pytest.importorskip("ray", reason="ray[serve] is installed by make setup (dev extra)")
serve = pytest.importorskip("ray.serve")


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    connect(None)
    yield
    serve.shutdown()
    ray.shutdown()


def on_ray(entry_id: str, engine: str, **fields: Any) -> ModelEntry:
    return ModelEntry(id=entry_id, engine=engine, runtime="ray", ray_actor_options={"num_cpus": 0.25}, **fields)


def test_the_builtin_model_on_ray_answers_with_the_in_process_pixels(ray_cluster: None, tmp_path: Path) -> None:
    body = {"model": "emoji-ray", "prompt": "a red apple", "size": "64x64", "seed": 7, "response_format": "b64_json"}
    models = [on_ray("emoji-ray", "builtin"), ModelEntry(id="emoji-here", engine="builtin")]
    settings = Settings(data_dir=tmp_path, models=models, default_model="emoji-here")
    with live_server(create_app(settings)) as url:
        remote = httpx.post(url + "/v1/images/generations", json=body, timeout=120)
        local = httpx.post(url + "/v1/images/generations", json={**body, "model": "emoji-here"}, timeout=120)
    assert remote.status_code == 200, remote.text
    images = [
        Image.open(io.BytesIO(base64.b64decode(r.json()["data"][0]["b64_json"]))).convert("RGB")
        for r in (remote, local)
    ]
    assert images[0].size == (64, 64)
    extrema: list[tuple[int, int]] = list(ImageChops.difference(images[0], images[1]).getextrema())  # type: ignore[arg-type]
    assert max(high for _, high in extrema) <= 2, "the same engine, seed and size on Ray and in-process"
    assert app_name(models[0]) in serve.status().applications


async def test_a_ray_model_reports_each_step_and_its_previews_like_in_process(ray_cluster: None) -> None:
    """The built-in model calls back from its worker thread on the replica; here the callbacks see the
    same steps, in order, and the same previews as the in-process engine gives."""
    build = default_factories()["builtin"]
    seen: dict[str, list[tuple[int, int]]] = {"ray": [], "here": []}
    previews: dict[str, list[tuple[int, list[tuple[int, int]]]]] = {"ray": [], "here": []}
    images: dict[str, list[Image.Image]] = {}
    lock = threading.Lock()  # the in-process engine calls from its worker thread
    for where, entry in (("ray", on_ray("emoji-ray", "builtin")), ("here", ModelEntry(id="here", engine="builtin"))):

        def progress(step: int, total: int, where: str = where) -> None:
            with lock:
                seen[where].append((step, total))

        def preview(step: int, rough: list[Image.Image], where: str = where) -> None:
            with lock:
                previews[where].append((step, [image.size for image in rough]))

        request = EngineRequest(
            mode=Mode.GENERATE, prompt="a red apple", width=64, height=64, seeds=[7], steps=5,
            progress=progress, preview=preview, preview_every=2,
        )  # fmt: skip
        engine = build(entry)
        assert isinstance(engine, RayServeEngine) == (where == "ray")
        images[where] = [generated.image for generated in await engine.generate(request)]
        await engine.aclose()
    assert seen["ray"] == seen["here"] == [(step, 5) for step in range(1, 6)], seen
    assert previews["ray"] and all(len(sizes) == 1 and step % 2 == 0 for step, sizes in previews["ray"]), previews
    assert previews["ray"] == previews["here"], "the same previews, of the same size, as in-process"
    assert [image.size for image in images["ray"]] == [image.size for image in images["here"]]


def test_a_ray_model_streams_openai_partial_images(ray_cluster: None, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, models=[on_ray("emoji-ray", "builtin")], default_model="emoji-ray")
    body = {"model": "emoji-ray", "prompt": "a red apple", "size": "64x64", "stream": True, "partial_images": 2}
    with live_server(create_app(settings)) as url:
        with httpx.stream(
            "POST", url + "/v1/images/generations", json=body, headers={"X-Request-Id": "ray-stream-1"}, timeout=120
        ) as response:
            assert response.status_code == 200
            events = [
                json.loads(line.removeprefix("data: ")) for line in response.iter_lines() if line.startswith("data: ")
            ]
        job = httpx.get(url + "/v1/jobs/ray-stream-1", timeout=10)
    partials = events[:-1]  # up to partial_images of them (OpenAI's rule): the built-in model previews its stages
    assert 1 <= len(partials) <= 2 and events[-1]["type"] == "image_generation.completed", events
    assert [event["type"] for event in partials] == ["image_generation.partial_image"] * len(partials)
    assert [event["partial_image_index"] for event in partials] == list(range(len(partials)))
    for event in events:
        assert Image.open(io.BytesIO(base64.b64decode(event["b64_json"]))).size == (64, 64)
    assert job.status_code == 200 and job.json()["status"] == "done"
    assert job.json()["step"] == job.json()["total_steps"] > 0


async def test_a_client_that_leaves_cancels_the_work_on_the_replica(ray_cluster: None, tmp_path: Path) -> None:
    # 600 pretend steps over 60 s: progress from the replica every 0.1 s shows the request has landed there
    entry = on_ray("slow-ray", "testpattern", options={"delay": 60.0}, default_steps=600, max_concurrency=2)
    state = build_state(Settings(data_dir=tmp_path, models=[entry], default_model="slow-ray"))
    engine = state.catalog.built().get("slow-ray") or state.catalog.engine(entry)
    assert isinstance(engine, RayServeEngine)
    await engine.load()
    before = (await engine.stats())["cancelled"]
    task = asyncio.create_task(
        state.service.run(ImageRequest(prompt="x", model="slow-ray", size=SizeSpec(64, 64)), "r1")
    )
    await until(lambda: getattr(state.jobs.get("local", "r1"), "step", 0) >= 1, 60, what="the replica runs the job")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline = asyncio.get_running_loop().time() + 30
    while (await engine.stats())["cancelled"] <= before:
        assert asyncio.get_running_loop().time() < deadline, "the replica never saw the cancellation"
        await asyncio.sleep(0.2)
    await state.catalog.aclose()


async def test_ray_backpressure_is_a_full_queue(ray_cluster: None, tmp_path: Path) -> None:
    # 600 pretend steps over 60 s: r0's progress shows it runs on the replica, which then has no room left
    entry = on_ray(
        "busy-ray", "testpattern", options={"delay": 60.0}, default_steps=600, max_concurrency=1, max_queue=1
    )
    state = build_state(Settings(data_dir=tmp_path, models=[entry], default_model="busy-ray"))
    request = ImageRequest(prompt="x", model="busy-ray", size=SizeSpec(64, 64))

    def job(name: str) -> object:
        return state.jobs.get("local", name)

    running = [asyncio.create_task(state.service.run(request, "r0"))]
    await until(lambda: getattr(job("r0"), "step", 0) >= 1, 60, what="r0 runs on the replica")
    running.append(asyncio.create_task(state.service.run(request, "r1")))
    await until(lambda: getattr(job("r1"), "state", None) == "running", what="r1 goes to Ray, which queues it")
    with pytest.raises(QueueFull) as caught:
        await state.service.run(request, "r-refused")
    assert caught.value.message == "Model 'busy-ray' is busy on every Ray replica; try again shortly."
    assert caught.value.details["retry_after"] == 2.0
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)
    await state.catalog.aclose()


async def test_a_killed_replica_is_replaced_and_requests_keep_working(ray_cluster: None, tmp_path: Path) -> None:
    entry = on_ray("sturdy-ray", "testpattern")
    state = build_state(Settings(data_dir=tmp_path, models=[entry], default_model="sturdy-ray"))
    engine = state.catalog.engine(entry)
    assert isinstance(engine, RayServeEngine)
    request = ImageRequest(prompt="x", model="sturdy-ray", size=SizeSpec(64, 64), seed=3)
    first = await state.service.run(request, "before")
    old_pid = (await engine.stats())["pid"]
    os.kill(old_pid, signal.SIGKILL)

    async def works_again() -> int:
        while True:
            try:
                await state.service.run(request, f"after-{asyncio.get_running_loop().time()}")
                pid: int = (await engine.stats())["pid"]
                return pid
            except Exception:
                await asyncio.sleep(0.5)

    new_pid = await asyncio.wait_for(works_again(), 90)
    assert new_pid != old_pid
    again = await state.service.run(request, "again")
    assert pixels(again.images[0].data) == pixels(first.images[0].data), (
        "the same seed: the same image on the new replica"
    )
    await state.catalog.aclose()


def test_operators_deploy_inspect_and_delete_ray_models(
    ray_cluster: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from limner.cli import app

    config = tmp_path / "limner.toml"
    config.write_text(
        '[[models]]\nid = "cli-ray"\nengine = "testpattern"\nruntime = "ray"\nray_actor_options = {num_cpus = 0.25}\n'
        '[[models]]\nid = "here"\nengine = "testpattern"\n'
    )
    monkeypatch.setenv("LIMNER_CONFIG", str(config))
    monkeypatch.setenv("LIMNER_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    deployed = runner.invoke(app, ["ray", "deploy"])
    assert deployed.exit_code == 0, deployed.output
    assert deployed.output == "cli-ray: running as limner-cli-ray\n"
    status = runner.invoke(app, ["ray", "status"])
    assert status.exit_code == 0 and status.output.startswith("cli-ray: RUNNING (1 running)"), status.output
    deleted = runner.invoke(app, ["ray", "delete", "--model", "cli-ray"])
    assert deleted.exit_code == 0 and "limner-cli-ray" not in serve.status().applications
    assert runner.invoke(app, ["ray", "status"]).output == (
        "cli-ray: not deployed (limner ray deploy, or the first request deploys it)\n"
    )
    missing = runner.invoke(app, ["ray", "deploy", "--model", "here"])
    assert missing.exit_code == 1 and "no catalog model with runtime = \"ray\" named 'here'" in missing.output


def test_a_request_on_ray_is_one_trace_from_the_api_into_the_replica(ray_cluster: None, tmp_path: Path) -> None:
    """The API's ``limner.ray`` span is the parent of the replica's span, which the replica exports itself
    (over OTLP, from the variables its runtime environment gives it), in another process."""
    with otlp_receiver() as (endpoint, bodies):
        variables = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_SERVICE_NAME": "limner-models",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        }
        options = {"num_cpus": 0.25, "runtime_env": {"env_vars": variables}}
        entry = ModelEntry(id="traced-ray", engine="testpattern", runtime="ray", ray_actor_options=options)
        settings = Settings(data_dir=tmp_path, models=[entry], default_model="traced-ray")
        body = {"model": "traced-ray", "prompt": "x", "size": "64x64", "response_format": "b64_json"}
        try:
            with recorded_spans() as recorder, live_server(create_app(settings)) as url:
                response = httpx.post(url + "/v1/images/generations", json=body, timeout=120)
                assert response.status_code == 200, response.text
            wait_until(lambda: "limner.ray.replica" in {one.name for one in exported(bodies)}, 30, what="export")
        finally:
            serve.delete(app_name(entry))
    spans = recorder.get_finished_spans()
    server, hop = named(spans, "POST /v1/images/generations"), named(spans, "limner.ray")
    assert hop.kind is SpanKind.CLIENT and trace_id(hop) == trace_id(server)
    assert hop.attributes is not None and hop.attributes["limner.ray.application"] == "limner-traced-ray"
    [replica] = [one for one in exported(bodies) if one.name == "limner.ray.replica"]
    assert (replica.trace_id, replica.parent_span_id) == (trace_id(hop), span_id(hop))
    assert replica.service == "limner-models" and replica.attributes["limner.model"] == "traced-ray"
    assert replica.attributes["process.pid"] != os.getpid(), "exported by the replica's own process"
