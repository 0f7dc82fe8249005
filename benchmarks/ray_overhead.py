"""The price of the Ray Serve hop: the built-in model in-process against the same model on Ray Serve with one
and with two replicas, in one run, through the same ``ImageService``.

Each configuration gets the same closed-loop load (``--concurrency`` callers, each sending its next request
as soon as the previous one answers) for ``--seconds`` per round; rounds are interleaved (in-process, Ray
x1, Ray x2, then again) so drift on this shared machine hits all three alike, and ratios are medians of
per-round ratios. Ray runs locally on this machine's CPUs; on one machine two replicas share the same
cores, so the two-replica figure measures Ray's spreading, not extra hardware. Every configuration runs
torch with one intra-op thread (what Ray gives a replica with ``num_cpus`` 1 or less).

    python -m benchmarks.ray_overhead [--rounds 3] [--seconds 20] [--concurrency 4]

Writes ``benchmarks/results/ray_overhead.{md,json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from limner.app import build_state
from limner.config.defaults import default_models
from limner.core.models import ImageRequest, SizeSpec
from limner.engines.catalog import ModelEntry
from limner.engines.ray_serve import connect
from limner.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results"
PROMPTS = ("a red apple", "a blue heart", "a rocket", "a snowman", "a cat face", "a rainbow")


@dataclass
class Round:
    config: str
    images: int
    seconds: float
    latencies: list[float]

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies) * 1000


def configs() -> dict[str, ModelEntry]:
    builtin = default_models()[0]
    ray = {"runtime": "ray", "ray_actor_options": {"num_cpus": 0.5}}
    return {
        "in-process": builtin.model_copy(update={"id": "here", "aliases": []}),
        "ray x1": builtin.model_copy(update={"id": "ray-one", "aliases": [], **ray}),
        "ray x2": builtin.model_copy(update={"id": "ray-two", "aliases": [], "ray_replicas": 2, **ray}),
    }


async def run_round(state: object, model: str, name: str, seconds: float, concurrency: int) -> Round:
    service = state.service  # type: ignore[attr-defined]
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()

    async def caller(index: int) -> None:
        count = 0
        while time.perf_counter() < deadline:
            request = ImageRequest(prompt=PROMPTS[(index + count) % len(PROMPTS)], model=model, size=SizeSpec(256, 256))
            begin = time.perf_counter()
            await service.run(request, f"bench-{name}-{index}-{count}-{begin}")
            latencies.append(time.perf_counter() - begin)
            count += 1

    await asyncio.gather(*(caller(index) for index in range(concurrency)))
    return Round(name, len(latencies), time.perf_counter() - started, latencies)


async def main_async(rounds: int, seconds: float, concurrency: int) -> dict[str, object]:
    entries = configs()
    import torch

    # Ray starts each replica with OMP_NUM_THREADS = its num_cpus (here 1): give the in-process model the
    # same one intra-op thread, so the comparison is the hop and not a thread policy.
    torch.set_num_threads(1)
    connect(None)
    data = Path(tempfile.mkdtemp(prefix="limner-ray-bench-"))
    state = build_state(Settings(data_dir=data, models=list(entries.values()), default_model="here"))
    for name, entry in entries.items():  # warm up: load weights, deploy replicas, first call
        await run_round(state, entry.id, name, 2.0, concurrency)
    results: list[Round] = []
    for _ in range(rounds):
        for name, entry in entries.items():
            results.append(await run_round(state, entry.id, name, seconds, concurrency))
    await state.catalog.aclose()
    return summarise(results, rounds, seconds, concurrency)


def summarise(results: list[Round], rounds: int, seconds: float, concurrency: int) -> dict[str, object]:
    by_config: dict[str, list[Round]] = {}
    for result in results:
        by_config.setdefault(result.config, []).append(result)
    base = by_config["in-process"]
    table = {}
    for name, runs in by_config.items():
        table[name] = {
            "images_per_second": statistics.median(run.images_per_second for run in runs),
            "p50_ms": statistics.median(run.p50_ms for run in runs),
            "throughput_vs_in_process": statistics.median(
                run.images_per_second / here.images_per_second for run, here in zip(runs, base, strict=True)
            ),
            "p50_vs_in_process": statistics.median(
                run.p50_ms / here.p50_ms for run, here in zip(runs, base, strict=True)
            ),
        }
    return {
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "conditions": {"rounds": rounds, "seconds_per_round": seconds, "concurrency": concurrency, "size": "256x256"},
        "results": table,
        "rounds": [asdict(result) | {"latencies": len(result.latencies)} for result in results],
    }


def markdown(report: dict[str, object]) -> str:
    conditions = report["conditions"]
    machine = report["machine"]
    lines = [
        "| configuration | images/s | p50 (ms) | throughput vs in-process | p50 vs in-process |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in report["results"].items():  # type: ignore[attr-defined]
        lines.append(
            f"| {name} | {row['images_per_second']:.2f} | {row['p50_ms']:.0f} | "
            f"{row['throughput_vs_in_process']:.2f}x | {row['p50_vs_in_process']:.2f}x |"
        )
    lines.append("")
    lines.append(
        f"Built-in model, 256x256, {conditions['concurrency']} closed-loop callers, "  # type: ignore[index]
        f"{conditions['rounds']} interleaved rounds of {conditions['seconds_per_round']} s, "  # type: ignore[index]
        f"medians of per-round ratios; {machine['cpus']} CPUs ({machine['processor']}), Ray local on the same CPUs."  # type: ignore[index]
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    report = asyncio.run(main_async(args.rounds, args.seconds, args.concurrency))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ray_overhead.json").write_text(json.dumps(report, indent=2))
    text = markdown(report)
    (RESULTS / "ray_overhead.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
