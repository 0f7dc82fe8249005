"""Scheduling: step-level against request-level batching on the first emoji diffusion model, and the result cache.

The diffusion model is ``limner.builtin.pipeline:EmojiDiffusionPipeline`` at its real size (the UNet of
``build_unet(width=48)``, 8.5 M parameters, and its DPM-Solver++ scheduler, the configs it shipped with),
built in a temporary directory with random weights and served as an ``engine = "diffusers"`` entry, so
step-level batching runs through ``BuiltinSteps``; random weights cost what trained ones do. (The shipped
built-in model draws in stages in under a second and batches per request: there are no steps to share.)

Both batchers serve the same Poisson arrivals of 20-step 32x32 requests (distinct seeds, so the result cache
never answers) at 50%, 90% and 120% of capacity, through the whole image service in this process (planning,
admission, the model's line, the engine, finishing and encoding). Capacity is what request-level batching
delivers with its line always full (``--capacity`` to give one). Reported per rate: p50/p95/p99 latency of
the requests that got images, images/s, and the requests refused with a 429 (each must carry
``Retry-After``; any other failure is counted as lost). Then a repeated seeded 256x256 request to the
shipped built-in model answered from the result cache against generating it.

    python -m benchmarks.scheduling [--steps 20] [--seconds 60] [--threads N]
    python -m benchmarks.scheduling --quick      # a smoke run in a minute or two: not figures

Prints a Markdown table and writes ``benchmarks/results/scheduling.{md,json}``. Goals: p95 at
90% of capacity at most 0.6x request-level's, images/s at least 1.0x, nothing lost past capacity, and a
cache hit at least 20x faster than generating.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
LOADS = (0.5, 0.9, 1.2)
MODEL = "emoji-diffusion"
PIPELINE_CLASS = "limner.builtin.pipeline:EmojiDiffusionPipeline"
UNET_WIDTH = 48
"""The first-generation model's real UNet width (block channels 48/96/192)."""


@dataclass
class Run:
    mode: str
    load: float
    rate: float
    sent: int = 0
    latencies: list[float] = field(default_factory=list)
    refused: int = 0
    refused_without_retry_after: int = 0
    lost: int = 0
    images: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "load": self.load,
            "rate_per_s": round(self.rate, 3),
            "sent": self.sent,
            "ok": len(self.latencies),
            "refused_429": self.refused,
            "refused_without_retry_after": self.refused_without_retry_after,
            "lost": self.lost,
            "images_per_s": round(self.images / self.seconds, 3) if self.seconds else 0.0,
            "p50_s": _quantile(self.latencies, 0.50),
            "p95_s": _quantile(self.latencies, 0.95),
            "p99_s": _quantile(self.latencies, 0.99),
        }


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 3)


def build_model(path: Path) -> Path:
    """Save the first-generation emoji diffusion pipeline, real size, random (seeded) weights, to ``path``."""
    import torch

    from limner.builtin.pipeline import EmojiDiffusionPipeline
    from limner.builtin.train import build_unet, inference_scheduler

    torch.manual_seed(0)
    pipe: Any = EmojiDiffusionPipeline(build_unet(width=UNET_WIDTH), inference_scheduler())
    pipe.save_pretrained(path)
    return path


def _state(data_dir: Path, model: Path, step_level: bool, steps: int, max_batch: int, window_ms: float) -> Any:
    from limner.app import build_state
    from limner.engines.catalog import ModelEntry
    from limner.settings import Settings

    entry = ModelEntry(
        id=MODEL,
        engine="diffusers",
        path=model,
        pipeline_class=PIPELINE_CLASS,
        native_size=(32, 32),
        device="cpu",
        default_steps=steps,
        step_batching=step_level,
        max_batch_images=max_batch,
        batch_window_ms=window_ms,
        max_queue=64,
    )
    return build_state(Settings(data_dir=data_dir, models=[entry], default_model=MODEL, result_cache_bytes=0))


def _request(seed: int, steps: int | None, size: int = 32, model: str = MODEL) -> Any:
    from limner.core.models import ImageRequest, SizeSpec

    return ImageRequest(prompt="a red apple", model=model, seed=seed, steps=steps, size=SizeSpec(size, size))


Factory = Callable[[int], Any]
"""A request for a seed (an ``ImageRequest``)."""


async def _one(state: Any, run: Run, make: Factory, seed: int) -> None:
    from limner.core.errors import QueueFull

    sent = time.perf_counter()
    try:
        result = await state.service.run(make(seed), f"bench-{run.mode}-{seed}")
    except QueueFull as exc:
        run.refused += 1
        run.refused_without_retry_after += exc.details.get("retry_after") is None
        return
    except Exception:
        run.lost += 1
        return
    run.latencies.append(time.perf_counter() - sent)
    run.images += len(result.images)


async def _poisson(state: Any, run: Run, make: Factory, seconds: float, seed: int) -> None:
    """Send requests at ``run.rate`` per second (exponential gaps) for ``seconds``; wait for all of them."""
    rng = random.Random(seed)
    tasks = []
    started = time.perf_counter()
    next_at = started
    while next_at - started < seconds:
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        run.sent += 1
        tasks.append(asyncio.ensure_future(_one(state, run, make, seed * 1_000_000 + run.sent)))
        next_at += rng.expovariate(run.rate)
    await asyncio.gather(*tasks)
    run.seconds = time.perf_counter() - started


async def _capacity(state: Any, make: Factory, requests: int) -> float:
    """Requests per second the service completes with its line always full (all sent at once)."""
    started = time.perf_counter()
    await asyncio.gather(*(state.service.run(make(900_000 + i), f"cap-{i}") for i in range(requests)))
    return requests / (time.perf_counter() - started)


async def compare(
    states: dict[str, Any], make: Factory, *, seconds: float, capacity: float | None, capacity_requests: int
) -> dict[str, Any]:
    """Poisson arrivals at each of ``LOADS`` x capacity on each state (``request-level`` measures capacity)."""
    for state in states.values():  # warm: weights loaded, first calls made
        await asyncio.gather(*(state.service.run(make(800_000 + i), f"warm-{i}") for i in range(4)))
    capacity = capacity or await _capacity(states["request-level"], make, capacity_requests)
    print(f"capacity: {capacity:.2f} requests/s (request-level, line always full)", flush=True)
    runs = []
    for load in LOADS:
        for mode, state in states.items():
            run = Run(mode, load, capacity * load)
            await _poisson(state, run, make, seconds, seed=int(load * 100))
            print(json.dumps(run.summary()), flush=True)
            runs.append(run.summary())
    return {"capacity_per_s": round(capacity, 3), "runs": runs}


async def _cache(root: Path, repeats: int) -> dict[str, Any]:
    """A seeded 256x256 request to the shipped built-in model generated (new seeds) against repeated (one
    seed: answered from the cache)."""
    from limner.app import build_state
    from limner.engines.catalog import BUILTIN_MODEL_ID, ModelEntry
    from limner.settings import Settings

    entry = ModelEntry(id=BUILTIN_MODEL_ID, engine="builtin")
    state = build_state(Settings(data_dir=root / "cache", models=[entry], default_model=BUILTIN_MODEL_ID))

    def request(seed: int) -> Any:
        return _request(seed, None, 256, model=BUILTIN_MODEL_ID)

    await state.service.run(request(1), "cache-warm")
    generate, hit = [], []
    for index in range(repeats):
        started = time.perf_counter()
        await state.service.run(request(100 + index), f"gen-{index}")
        generate.append(time.perf_counter() - started)
    for index in range(repeats):
        started = time.perf_counter()
        await state.service.run(request(1), f"hit-{index}")
        hit.append(time.perf_counter() - started)
    await state.catalog.aclose()
    gen_p50, hit_p50 = statistics.median(generate), statistics.median(hit)
    return {
        "model": BUILTIN_MODEL_ID,
        "size": "256x256",
        "generate_p50_s": round(gen_p50, 4),
        "hit_p50_s": round(hit_p50, 5),
        "speedup": round(gen_p50 / hit_p50, 1),
        "hits": state.service.cache.hits,
    }


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="limner-bench-scheduling-"))
    model = build_model(root / "emoji-diffusion")
    modes = {"request-level": False, "step-level": True}
    states = {
        mode: _state(root / mode, model, step_level, args.steps, args.max_batch, args.window_ms)
        for mode, step_level in modes.items()
    }
    result = await compare(
        states,
        lambda seed: _request(seed, args.steps),
        seconds=args.seconds,
        capacity=args.capacity,
        capacity_requests=args.capacity_requests,
    )
    for state in states.values():
        await state.catalog.aclose()
    cache = await _cache(root, args.cache_repeats)
    print(json.dumps(cache), flush=True)
    return {**result, "cache": cache}


def markdown(result: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        "# Scheduling: step-level vs request-level batching, and the result cache",
        "",
        f"First-generation emoji diffusion model (`EmojiDiffusionPipeline`, real size, random weights), "
        f"{meta['steps']} steps, 32x32, Poisson arrivals for {meta['seconds']} s per rate; "
        f"capacity {result['capacity_per_s']} requests/s; {meta['threads']} torch thread(s) on {meta['machine']}.",
        "",
        *table(result),
    ]
    cache = result["cache"]
    lines += [
        "",
        f"Result cache, a seeded {cache['size']} request to the shipped built-in model ({cache['model']}): "
        f"generate p50 {cache['generate_p50_s']} s, "
        f"hit p50 {cache['hit_p50_s']} s: {cache['speedup']}x.",
    ]
    return "\n".join(lines) + "\n"


def table(result: dict[str, Any]) -> list[str]:
    """The comparison's Markdown tables: every run, then step-level over request-level per load."""
    lines = [
        "| load | batching | sent | ok | 429 | lost | images/s | p50 s | p95 s | p99 s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        lines.append(
            f"| {run['load']:.0%} | {run['mode']} | {run['sent']} | {run['ok']} | {run['refused_429']} | "
            f"{run['lost']} | {run['images_per_s']} | {run['p50_s']} | {run['p95_s']} | {run['p99_s']} |"
        )
    by = {(run["load"], run["mode"]): run for run in result["runs"]}
    lines += ["", "| load | p95 step/request | images/s step/request |", "|---|---|---|"]
    for load in LOADS:
        step, request = by.get((load, "step-level")), by.get((load, "request-level"))
        if step and request and step["p95_s"] and request["p95_s"] and request["images_per_s"]:
            lines.append(
                f"| {load:.0%} | {step['p95_s'] / request['p95_s']:.2f}x | "
                f"{step['images_per_s'] / request['images_per_s']:.2f}x |"
            )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scheduling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0, help="Poisson arrivals per rate and batcher")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--window-ms", type=float, default=25.0, help="request-level batching's window")
    parser.add_argument("--capacity", type=float, help="requests/s at 100%% (default: measured)")
    parser.add_argument("--capacity-requests", type=int, default=64)
    parser.add_argument("--cache-repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="4 steps, 5 s per rate: a smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.seconds, args.capacity_requests, args.cache_repeats = 4, 5.0, 16, 3
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    result = asyncio.run(_main(args))
    meta = {
        "steps": args.steps,
        "seconds": args.seconds,
        "threads": args.threads,
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
        "quick": args.quick,
        "load_average": os.getloadavg(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    text = markdown(result, meta)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "scheduling_quick" if args.quick else "scheduling"
    (args.out / f"{name}.md").write_text(text)
    (args.out / f"{name}.json").write_text(json.dumps({"meta": meta, **result}, indent=2) + "\n")


if __name__ == "__main__":
    main()
