"""Local models on Ray Serve: the same engine (diffusers or built-in, with its batching) as a Ray Serve
deployment, called through a deployment handle behind limner's ``Engine`` interface.

A catalog entry with ``runtime = "ray"`` gets a ``RayServeEngine`` here instead of the engine itself.
On ``load`` (or the first request) it connects to the Ray cluster at ``ray_address`` (a local Ray when
unset), deploys ``EngineDeployment`` as the Serve application ``limner-<model id>`` if it is not already
running, and from then on sends each ``EngineRequest`` to it. Inside each replica the deployment builds
the entry's engine with the ordinary factories, so what runs on Ray is exactly what would run in-process.

What Ray does, and limner therefore does not: placement (``ray_actor_options`` such as ``num_gpus``),
replicas and autoscaling (``ray_replicas``, ``ray_max_replicas``), per-replica concurrency
(``max_ongoing_requests`` = the entry's ``admitted``), queueing and backpressure (``max_queued_requests``
= ``max_queue``; a full queue is limner's ``QueueFull``, 429 with ``Retry-After``), and restarting
replicas that die. A client that leaves cancels its request on the replica (Serve cancels the
replica's task, and the engine stops at its next step).

Per-step progress and previews cross back through Serve's streaming responses: ``EngineDeployment.stream``
is an async generator that runs the engine with its own ``progress``/``preview`` callbacks (called from
the engine's worker threads, so they hand events to the generator with ``call_soon_threadsafe``) and
yields ``Progress`` and ``Preview`` events as they come, then the images; ``RayServeEngine.generate``
iterates it and calls the request's own callbacks in this process. Previews (plain PIL images, which
pickle) are made only when the request asked for them, every ``preview_every`` steps. ``rows_wanted``
never crosses (it asks this process about its callers): a batch on the replica runs all its rows.

Traces cross too: the API side wraps each call in a ``limner.ray`` client span and hands its W3C context
(``trace_context``) to the replica, whose ``limner.ray.replica`` span continues the request's trace. Each
replica turns tracing on from its own ``OTEL_*`` variables (the Ray pods' environment on KubeRay, or
``runtime_env.env_vars`` in the entry's ``ray_actor_options``), exactly as the API does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import SpanKind
from PIL import Image

from limner.core.errors import LimnerError, ModelError, ModelNotAvailable, QueueFull
from limner.core.models import Capabilities, EngineRequest, GeneratedImage
from limner.core.tracing import carrier, configure_tracing, continued, span
from limner.engines.base import Engine
from limner.engines.catalog import EngineFactory, ModelEntry

log = logging.getLogger(__name__)

APP_PREFIX = "limner-"
BUSY_RETRY_SECONDS = 2.0


@dataclass(frozen=True)
class Progress:
    """A step done on the replica: ``(step, total)`` for the request's ``progress`` callback."""

    step: int
    total: int


@dataclass(frozen=True)
class Preview:
    """Rough images at ``step`` (one per seed) for the request's ``preview`` callback."""

    step: int
    images: list[Image.Image]


@dataclass(frozen=True)
class Finished:
    """The last event of a stream: the engine's images."""

    images: list[GeneratedImage]


Event = Progress | Preview | Finished


def app_name(entry: ModelEntry) -> str:
    return APP_PREFIX + entry.id


def connect(address: str | None) -> None:
    """Join the Ray cluster at ``address``, or start a private local one; Ray's usage reporting stays off."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if not ray.is_initialized():
        loopback = address is not None and address.split("://")[-1].startswith(("127.0.0.1:", "localhost:"))
        ray.init(
            address=address,
            _node_ip_address="127.0.0.1" if loopback else None,  # a cluster on loopback: join it there too
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            ignore_reinit_error=True,
        )


class EngineDeployment:
    """The body of each Ray Serve replica: one local engine for one catalog entry."""

    def __init__(self, entry_json: str) -> None:
        from limner.engines.registry import default_factories

        configure_tracing()  # this replica's own OTEL_* variables
        entry = ModelEntry.model_validate_json(entry_json).model_copy(update={"runtime": "local"})
        self.model = entry.id
        self.engine = default_factories()[entry.engine](entry)
        self.cancelled = 0

    async def generate(
        self, request: EngineRequest, trace_context: dict[str, str] | None = None
    ) -> list[GeneratedImage]:
        """The images only, for callers that want no progress (operators calling the application)."""
        images: list[GeneratedImage] = []
        async for event in self.stream(request, trace_context):
            if isinstance(event, Finished):
                images = event.images
        return images

    async def stream(self, request: EngineRequest, trace_context: dict[str, str] | None = None) -> AsyncIterator[Event]:
        """Run the engine, yielding its progress and (when ``preview_every`` > 0) previews as they come,
        then ``Finished``; the engine's own error is raised here. Cancelling the stream cancels the engine.
        ``trace_context`` (the caller's ``carrier()``) makes the replica's span part of the request's trace."""
        pid, images = os.getpid(), len(request.seeds)
        with continued(
            "limner.ray.replica",
            trace_context,
            {"limner.model": self.model, "limner.images": images, "process.pid": pid},
        ):
            async for event in self._run(request):
                yield event

    async def _run(self, request: EngineRequest) -> AsyncIterator[Event]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event | None] = asyncio.Queue()

        def put(event: Event) -> None:  # from the engine's worker threads (or the loop itself)
            with contextlib.suppress(RuntimeError):  # the replica's loop is gone: nobody is listening
                loop.call_soon_threadsafe(events.put_nowait, event)

        wants_previews = request.preview_every > 0
        local = dataclasses.replace(
            request,
            progress=lambda step, total: put(Progress(step, total)),
            preview=(lambda step, images: put(Preview(step, list(images)))) if wants_previews else None,
        )
        work = asyncio.ensure_future(self.engine.generate(local))
        # Scheduled after every event the engine handed over before it returned: the queue stays in order.
        work.add_done_callback(lambda _: events.put_nowait(None))
        try:
            while (event := await events.get()) is not None:
                yield event
            yield Finished(work.result())
        finally:
            if not work.done():  # the caller left (Serve cancelled this stream): stop the engine too
                work.cancel()
                self.cancelled += 1
                await asyncio.gather(work, return_exceptions=True)

    def capabilities(self) -> Capabilities:
        return self.engine.capabilities

    def stats(self) -> dict[str, Any]:
        """What tests and operators ask a replica: its process and how many requests it saw cancelled."""
        return {"pid": os.getpid(), "cancelled": self.cancelled, "loaded": self.engine.loaded}


def deployment_for(entry: ModelEntry) -> Any:
    """``EngineDeployment`` configured for ``entry`` (replicas, autoscaling, actor options, backpressure)."""
    from ray import serve

    scaling: dict[str, Any] = {"num_replicas": entry.ray_replicas}
    if entry.ray_max_replicas and entry.ray_max_replicas > entry.ray_replicas:
        scaling = {"autoscaling_config": {"min_replicas": entry.ray_replicas, "max_replicas": entry.ray_max_replicas}}
    local = entry.model_copy(update={"runtime": "local"})
    return serve.deployment(
        EngineDeployment,
        name="engine",
        ray_actor_options=entry.ray_actor_options or {"num_cpus": 1},
        max_ongoing_requests=local.admitted,
        max_queued_requests=entry.max_queue,
        **scaling,
    )


def application(args: dict[str, Any]) -> Any:
    """A Ray Serve application builder, for a Serve config (KubeRay's ``RayService``): ``import_path:
    limner.engines.ray_serve:application`` with ``args: {model: {...}}``, a ``[[models]]`` entry as in
    ``limner.toml``, deploys that model ahead of traffic as ``limner ray deploy`` would. Name the application
    ``limner-<id>`` (``app_name``): API replicas look it up by that name and use it as it is."""
    entry = ModelEntry.model_validate(args["model"])
    return deployment_for(entry).bind(entry.model_dump_json())


class RayServeEngine(Engine):
    """An entry's engine, running on Ray Serve; see the module docstring."""

    def __init__(self, entry: ModelEntry, local: EngineFactory) -> None:
        self.entry = entry
        # Built here only to describe what the model accepts (no weights are loaded in this process).
        self._shape = local(entry.model_copy(update={"runtime": "local"}))
        self._handle: Any = None
        self._deploying: asyncio.Lock | None = None

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        return self._shape.capabilities

    @property
    def loaded(self) -> bool:
        return self._handle is not None

    async def load(self) -> None:
        if self._handle is not None:
            return
        self._deploying = self._deploying or asyncio.Lock()
        async with self._deploying:
            if self._handle is None:
                try:
                    self._handle = await asyncio.to_thread(self._deploy)
                except Exception as exc:
                    log.error("model '%s' could not be deployed on Ray: %s", self.entry.id, exc)
                    raise ModelNotAvailable(
                        f"Model '{self.entry.id}' could not be started on its Ray cluster ({type(exc).__name__})."
                    ) from exc

    def _deploy(self) -> Any:
        from ray import serve

        connect(self.entry.ray_address)
        name = app_name(self.entry)
        try:
            return serve.get_app_handle(name)
        except Exception:  # not deployed yet (Ray raises a plain RayServeException)
            log.info("deploying model '%s' on Ray Serve as application %s", self.entry.id, name)
            return serve.run(
                deployment_for(self.entry).bind(self.entry.model_dump_json()), name=name, route_prefix=None
            )

    async def generate(self, request: EngineRequest) -> list[GeneratedImage]:
        await self.load()
        # Callbacks into this process cannot cross to a replica: the replica makes its own and streams
        # their events back (previews only if this request has somewhere to send them).
        every = request.preview_every if request.preview is not None else 0
        remote = dataclasses.replace(request, progress=None, preview=None, preview_every=every, rows_wanted=None)
        name = app_name(self.entry)
        with span("limner.ray", {"limner.model": self.entry.id, "limner.ray.application": name}, kind=SpanKind.CLIENT):
            response = self._handle.options(stream=True).stream.remote(remote, carrier())
            return await self._answer(response, request)

    async def _answer(self, response: Any, request: EngineRequest) -> list[GeneratedImage]:
        """The stream's images, with Ray's failures as limner's errors."""
        from ray.serve.exceptions import BackPressureError, RequestCancelledError

        try:
            return await self._follow(response, request)
        except asyncio.CancelledError:
            response.cancel()  # the client left: stop the replica's work too
            raise
        except BackPressureError as exc:
            raise QueueFull(
                f"Model '{self.entry.id}' is busy on every Ray replica; try again shortly.",
                retry_after=BUSY_RETRY_SECONDS,
            ) from exc
        except RequestCancelledError:
            raise asyncio.CancelledError from None
        except LimnerError:
            raise
        except Exception as exc:  # a replica that died mid-request, or the engine's own failure
            log.error("model '%s' failed on Ray Serve: %s", self.entry.id, exc)
            cause = getattr(exc, "cause", None)  # Ray's RayTaskError carries the replica's own exception
            if isinstance(cause, LimnerError):
                raise cause from exc
            raise ModelError(f"Model '{self.entry.id}' failed on its Ray Serve replica.") from exc

    async def _follow(self, response: Any, request: EngineRequest) -> list[GeneratedImage]:
        """Hand the stream's events to the request's callbacks until its images come."""
        async for event in response:
            if isinstance(event, Finished):
                return event.images
            if isinstance(event, Progress) and request.progress is not None:
                request.progress(event.step, event.total)
            elif isinstance(event, Preview) and request.preview is not None:
                # Rendering a preview (scaling, encoding) is the callback's work: off the event loop.
                await asyncio.to_thread(request.preview, event.step, event.images)
        raise ModelError(f"Model '{self.entry.id}' ended its Ray Serve stream without images.")

    async def stats(self) -> dict[str, Any]:
        await self.load()
        stats: dict[str, Any] = await self._handle.stats.remote()
        return stats

    async def aclose(self) -> None:
        """Stop using the deployment; the application keeps running on the cluster for other API replicas
        (``limner ray delete`` removes it)."""
        self._handle = None
        await self._shape.aclose()


def on_ray(factory: EngineFactory) -> EngineFactory:
    """Wrap a local engine factory: entries with ``runtime = "ray"`` get a ``RayServeEngine`` instead."""

    def build(entry: ModelEntry) -> Engine:
        if entry.runtime == "ray":
            return RayServeEngine(entry, factory)
        return factory(entry)

    return build
