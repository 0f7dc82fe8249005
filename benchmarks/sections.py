"""The five measurements of issue 8, each a ratio of two things measured side by side in one run.

All of them use the built-in model (``limner-emoji-32``) at its native 32x32, so limner and the thing
it is compared with produce the very same pixels (checked, not assumed); only the server overhead
also shows the default 1024x1024 output, where limner upscales and encodes a far larger PNG.

=========  ====================================================================================
overhead   OpenAI dialect over HTTP vs ``DiffusersEngine.generate`` in-process, concurrency 1, and
           where the server's time went by stage (its ``limner_stage_seconds``)
batching   images/s at concurrency 1, 4, 8, 16 with micro-batching on vs off
latency    Poisson arrivals at 50% and 90% of capacity, then 150% with a small queue
naive      limner (batching on) vs a one-lock diffusers FastAPI server, concurrency 8
memory     server RSS: idle, with the model loaded, at peak (every server the run started)
=========  ====================================================================================
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable
from typing import Any

import httpx
from PIL import Image

from benchmarks.harness import MB, Server, builtin_entry
from benchmarks.load import Outcome, client, closed_loop, merge, open_loop, run
from benchmarks.stage_split import Totals, split, totals
from benchmarks.suite import NATIVE, Suite
from limner.core.models import EngineRequest, Mode
from limner.engines.registry import default_factories

LARGE = "1024x1024"
"""The default output size: limner upscales to it and encodes a far larger PNG."""


# --- 1. server overhead ---


def overhead(suite: Suite) -> dict[str, Any]:
    """limner end to end (HTTP, OpenAI dialect, accounting, PNG, media store, base64) against the same
    engine called in this process, batching off on both sides; pairs interleave and alternate order
    so drift in the machine's load hits both alike. The figure is the ratio of medians at 32x32.
    Around each size the server's ``/metrics`` are read, for where its time went (``stage_split``)."""
    plan = suite.plan
    server = suite.unbatched()
    entry = builtin_entry(window_ms=0.0)
    engine = default_factories()[entry.engine](entry)
    rows: list[dict[str, Any]] = []

    async def measure() -> bool:
        await engine.load()
        identical = True
        async with client(plan.request_timeout) as http:

            async def via_http(body: dict[str, Any]) -> tuple[float, Image.Image]:
                started = time.perf_counter()
                response = await http.post(f"{server.url}/v1/images/generations", json=body)
                elapsed = time.perf_counter() - started
                response.raise_for_status()
                return elapsed, _decode(response.json()["data"][0]["b64_json"])

            async def direct(body: dict[str, Any]) -> tuple[float, Image.Image]:
                request = EngineRequest(
                    mode=Mode.GENERATE,
                    prompt=body["prompt"],
                    width=32,
                    height=32,
                    seeds=[body["seed"]],
                    steps=body["steps"],
                    upstream_model=body["model"],
                )
                started = time.perf_counter()
                images = await engine.generate(request)
                return time.perf_counter() - started, images[0].image

            async def server_totals() -> Totals:
                response = await http.get(f"{server.url}/metrics")
                response.raise_for_status()
                return totals(response.text, entry.id)

            for _ in range(2):  # warm the in-process engine like the server was warmed
                await direct(suite.next_body())
            for size, pairs in ((NATIVE, plan.overhead_pairs), (LARGE, plan.overhead_pairs_large)):
                http_s: list[float] = []
                direct_s: list[float] = []
                before = await server_totals()
                for pair in range(pairs):
                    body = suite.next_body() | {"size": size}
                    if pair % 2 == 0:
                        (h, h_image), (d, d_image) = await via_http(body), await direct(body)
                    else:
                        (d, d_image), (h, h_image) = await direct(body), await via_http(body)
                    http_s.append(h)
                    direct_s.append(d)
                    if size == NATIVE:
                        identical &= _pixels(h_image) == _pixels(d_image)
                stages = split(before, await server_totals(), http_s)
                rows.append(_overhead_row(size, http_s, direct_s) | {"stages": stages})
        await engine.aclose()
        return identical

    identical = run(measure())
    return {"rows": rows, "identical_pixels": identical, "target_ratio": 1.03}


def _overhead_row(size: str, http_s: list[float], direct_s: list[float]) -> dict[str, Any]:
    http_ms, direct_ms = _median(http_s) * 1000, _median(direct_s) * 1000
    paired = _median([h / d for h, d in zip(http_s, direct_s, strict=True)])
    return {
        "size": size,
        "pairs": len(http_s),
        "http_median_ms": round(http_ms, 2),
        "direct_median_ms": round(direct_ms, 2),
        "added_ms": round(http_ms - direct_ms, 2),
        "ratio": round(http_ms / direct_ms, 4),
        "paired_ratio_median": round(paired, 4),
    }


# --- 2. batching ---


def batching(suite: Suite) -> dict[str, Any]:
    """Closed-loop throughput with micro-batching on and off, per concurrency; which server goes first
    alternates from one level to the next."""
    plan = suite.plan
    on, off = suite.batched(), suite.unbatched()
    rows = []
    for position, concurrency in enumerate(plan.levels):
        requests = plan.closed_requests(concurrency)
        measured: dict[str, Outcome] = {}
        order = [("off", off), ("on", on)] if position % 2 == 0 else [("on", on), ("off", off)]
        for name, server in order:
            measured[name] = _closed(suite, server, concurrency, requests)
        on_ips, off_ips = measured["on"].images_per_second, measured["off"].images_per_second
        rows.append(
            {
                "concurrency": concurrency,
                "requests": requests,
                "on": measured["on"].summary(),
                "off": measured["off"].summary(),
                "ratio": round(on_ips / off_ips, 3) if off_ips else None,
            }
        )
        print(f"  batching c={concurrency}: on {on_ips:.2f} img/s, off {off_ips:.2f} img/s", flush=True)
    return {"rows": rows, "window_ms": plan.window_ms, "max_batch_images": plan.max_batch, "target_ratio_at_8": 2.0}


def _closed(suite: Suite, server: Server, concurrency: int, requests: int) -> Outcome:
    async def go() -> Outcome:
        async with client(suite.plan.request_timeout) as http:
            return await closed_loop(
                http,
                server.url,
                suite.workload,
                concurrency=concurrency,
                requests=requests,
                deadline_s=suite.plan.run_deadline_s,
                first_index=suite.indices(requests),
            )

    with server.watch():
        outcome: Outcome = run(go())
    return outcome


# --- 3. latency under open-loop load ---


def capacity(suite: Suite) -> tuple[float, str]:
    """Images/s the batched server sustains: the best closed-loop figure of this run's batching
    measurement, or a short closed loop at the highest concurrency when it was not run."""
    batching_rows = suite.results.get("batching", {}).get("rows")
    if batching_rows:
        best = max(batching_rows, key=lambda row: row["on"]["images_per_second"])
        return best["on"]["images_per_second"], f"batching measurement, concurrency {best['concurrency']}"
    top = max(suite.plan.levels)
    outcome = _closed(suite, suite.batched(), top, suite.plan.closed_requests(top))
    return outcome.images_per_second, f"closed loop at concurrency {top}"


def latency(suite: Suite) -> dict[str, Any]:
    """Open-loop latency at 50% and 90% of capacity on the batched server, then 150% against one with
    a small queue: what is refused must be a 429 with ``Retry-After``, nothing a 5xx, and RSS flat."""
    plan = suite.plan
    cap, source = capacity(suite)
    loads = []
    for fraction in (0.5, 0.9):
        server = suite.batched()
        outcome = _open(suite, server, cap * fraction, plan.open_duration_s)[0]
        loads.append({"fraction": fraction, "rate": round(cap * fraction, 3), **outcome.summary()})
        print(
            f"  latency at {fraction:.0%}: p50 {outcome.summary()['p50_ms']} ms, {dict(outcome.statuses)}", flush=True
        )
    server = suite.overloaded()
    before = server.rss()
    outcome, trace = _open(suite, server, cap * 1.5, plan.overload_duration_s)
    after = server.rss()
    summary = outcome.summary()
    overload = {
        "fraction": 1.5,
        "rate": round(cap * 1.5, 3),
        "max_queue": plan.overload_queue,
        **summary,
        "rss_before_mb": round(before / MB, 1),
        "rss_mid_mb": round(trace.at(0.5) / MB, 1),
        "rss_end_mb": round(trace.at(1.0) / MB, 1),
        "rss_peak_mb": round(trace.peak / MB, 1),
        "rss_after_mb": round(after / MB, 1),
        "rss_trace_mb": [
            (round(t, 2), round(rss / MB, 1)) for t, rss in trace.samples[:: max(1, len(trace.samples) // 200)]
        ],
    }
    rejected = summary["statuses"].get("429", 0)
    print(
        f"  overload at 150%: {rejected} x 429, {summary['server_errors']} x 5xx, "
        f"RSS {overload['rss_before_mb']} -> {overload['rss_after_mb']} MB",
        flush=True,
    )
    return {
        "capacity_images_per_second": round(cap, 4),
        "capacity_source": source,
        "loads": loads,
        "overload": overload,
        "duration_s": plan.open_duration_s,
        "overload_duration_s": plan.overload_duration_s,
    }


def _open(suite: Suite, server: Server, rate: float, duration: float) -> tuple[Outcome, Any]:
    plan = suite.plan
    budget = int(rate * duration * 2) + 16

    async def go() -> Outcome:
        async with client(plan.request_timeout) as http:
            return await open_loop(
                http,
                server.url,
                suite.workload,
                rate=rate,
                duration_s=duration,
                drain_s=plan.drain_s,
                first_index=suite.indices(budget),
            )

    with server.watch() as trace:
        outcome: Outcome = run(go())
    return outcome, trace


# --- 4. naive baseline ---


def naive(suite: Suite) -> dict[str, Any]:
    """The naive one-lock server and limner on the same pipeline at concurrency 8, in alternating
    rounds; first both answer one identical request, to show they do the same work."""
    plan = suite.plan
    baseline, limner = suite.naive(), suite.batched()
    body = suite.next_body()
    answers = [
        httpx.post(f"{s.url}/v1/images/generations", json=body, timeout=plan.request_timeout)
        for s in (baseline, limner)
    ]
    for answer in answers:
        answer.raise_for_status()
    same = _pixels(_decode(answers[0].json()["data"][0]["b64_json"])) == _pixels(
        _decode(answers[1].json()["data"][0]["b64_json"])
    )
    runs: dict[str, list[Outcome]] = {"naive": [], "limner": []}
    for _ in range(plan.naive_rounds):
        for name, server in (("naive", baseline), ("limner", limner)):
            runs[name].append(_closed(suite, server, plan.naive_concurrency, plan.naive_requests))
    naive_out, limner_out = merge(runs["naive"]), merge(runs["limner"])
    n, m = naive_out.summary(), limner_out.summary()
    print(f"  naive {n['images_per_second']} img/s vs limner {m['images_per_second']} img/s", flush=True)
    return {
        "concurrency": plan.naive_concurrency,
        "identical_pixels": same,
        "naive": n,
        "limner": m,
        "throughput_ratio": _ratio(m["images_per_second"], n["images_per_second"]),
        "p50_ratio": _ratio(n["p50_ms"], m["p50_ms"]),
        "p95_ratio": _ratio(n["p95_ms"], m["p95_ms"]),
        "naive_rss_mb": {"loaded": round(baseline.rss_loaded / MB, 1), "peak": round(baseline.peak / MB, 1)},
    }


# --- 5. memory ---


def memory(suite: Suite) -> dict[str, Any]:
    """RSS of each server this run started: idle (answering /health, no request yet: limner has built
    its engine but not loaded weights; the naive server loads at import), after warm-up (model loaded),
    and the highest sample seen while it was under load. Alone, runs one full batch for a peak."""
    if not {"batching", "latency", "naive"} & suite.results.keys():
        top = max(suite.plan.levels)
        _closed(suite, suite.batched(), top, 2 * top)
    rows = [
        {
            "server": server.name,
            **server.notes,
            "idle_mb": round(server.rss_idle / MB, 1),
            "loaded_mb": round(server.rss_loaded / MB, 1),
            "peak_mb": round(server.peak / MB, 1),
        }
        for server in suite.servers.running.values()
    ]
    return {"rows": rows}


SECTIONS: dict[str, Callable[[Suite], dict[str, Any]]] = {
    "overhead": overhead,
    "batching": batching,
    "latency": latency,
    "naive": naive,
    "memory": memory,
}
"""In the order they run: latency reuses batching's capacity, memory reads every server started before it."""


def _decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")


def _pixels(image: Image.Image) -> bytes:
    return image.convert("RGB").tobytes()


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return round(numerator / denominator, 3) if numerator and denominator else None
