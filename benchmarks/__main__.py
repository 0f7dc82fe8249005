"""Run limner's benchmark suite and write ``benchmarks/results/REPORT.md``, ``report.png`` and ``report.json``.

    python -m benchmarks                 # everything, full counts (several minutes; make bench)
    python -m benchmarks --quick         # a smoke run in about two minutes: indicative numbers only
    python -m benchmarks --only batching --only naive
    python -m benchmarks --only quality  # re-run a standalone benchmark and fold its result in
    python -m benchmarks --only png      # PNG compression options, to choose limner.media.encode.PNG_SAVE_OPTIONS
    python -m benchmarks --only litellm  # limner beside LiteLLM's proxy as gateways (needs wrk; make bench-gateway)
    python -m benchmarks --only scheduling  # step-level vs request-level batching, and the result cache

The servers run in subprocesses on 127.0.0.1, each with the same torch thread count as this process
(``--threads``, default the CPUs this process may use), set through ``OMP_NUM_THREADS`` before torch
starts in every process, this one included. Nothing here is collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT, describe_machine
from benchmarks.report import markdown
from benchmarks.sections import SECTIONS
from benchmarks.suite import Plan, Suite

RESULTS = Path(__file__).resolve().parent / "results"
STANDALONE = {
    "quality": "benchmarks.builtin_quality",
    "gateway": "benchmarks.gateway_overhead",
    "litellm": "benchmarks.gateway_vs_litellm",
    "png": "benchmarks.png_levels",
    "scheduling": "benchmarks.scheduling",
}
"""Older benchmarks with their own result files: folded into the report, re-run only when named."""
QUICK_STEPS = 4
FULL_STEPS = 20  # the built-in model's default


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts and 4 steps: a smoke run, not figures")
    parser.add_argument(
        "--only",
        action="append",
        choices=[*SECTIONS, *STANDALONE],
        help="run only this section (repeatable); the report keeps the other sections' last results",
    )
    parser.add_argument("--steps", type=int, help=f"denoising steps (default {FULL_STEPS}, quick {QUICK_STEPS})")
    parser.add_argument("--threads", type=int, help="torch intra-op threads per process (default: usable CPUs)")
    parser.add_argument("--window-ms", type=float, default=25.0, help="batch window when batching is on")
    parser.add_argument("--max-batch", type=int, default=16, help="max_batch_images when batching is on")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the report goes")
    return parser.parse_args(argv)


def pin_threads(threads: int) -> None:
    """OpenMP sizes its pool when torch starts, and a pool resized later runs measurably slower than the
    servers' (started with ``OMP_NUM_THREADS``): so run this process again the same way when it was not."""
    wanted = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if all(os.environ.get(name) == value for name, value in wanted.items()) or "torch" in sys.modules:
        return
    os.execve(sys.executable, [sys.executable, "-m", "benchmarks", *sys.argv[1:]], os.environ | wanted)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    threads = args.threads or len(os.sched_getaffinity(0))
    if argv is None:
        pin_threads(threads)
    import torch

    torch.set_num_threads(threads)  # the in-process engine of the overhead measurement
    steps = args.steps or (QUICK_STEPS if args.quick else FULL_STEPS)
    plan = Plan(args.quick, steps, threads, window_ms=args.window_ms, max_batch=args.max_batch)
    selected = args.only or list(SECTIONS)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "report.json"
    previous = json.loads(json_path.read_text()) if args.only and json_path.exists() else {}
    sections: dict[str, Any] = previous.get("sections", {})

    command = "python -m benchmarks" + (" " + " ".join(sys.argv[1:]) if argv is None and sys.argv[1:] else "")
    run_meta: dict[str, Any] = {
        "command": command,
        "mode": "quick" if plan.quick else "full",
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "steps": plan.steps,
        "threads": threads,
        "machine": describe_machine(threads),
    }
    print(
        f"limner benchmarks ({run_meta['mode']}): {run_meta['machine']['device']}, {threads} torch thread(s), "
        f"{plan.steps} steps",
        flush=True,
    )
    failed = False
    suite = Suite(plan)
    try:
        for name, measure in SECTIONS.items():
            if name not in selected:
                continue
            print(f"[{name}]", flush=True)
            started = time.perf_counter()
            try:
                data = measure(suite)
                suite.results[name] = data
            except Exception as exc:  # one failed measurement must not lose the others
                traceback.print_exc()
                data = {"error": f"{type(exc).__name__}: {exc}"}
                failed = True
            if suite.warnings:
                data["warnings"], suite.warnings = suite.warnings, []
            meta = run_meta | {"seconds": time.perf_counter() - started, "load_average_end": _load()}
            sections[name] = {"meta": meta, "data": data}
    finally:
        suite.close()
    for name, module in STANDALONE.items():
        if name in selected:
            print(f"[{name}] python -m {module}", flush=True)
            failed |= subprocess.run([sys.executable, "-m", module], cwd=ROOT).returncode != 0

    run_meta["load_average_end"] = _load()
    if previous.get("run") and not any(name in SECTIONS for name in selected):
        run_meta = previous["run"]  # only standalone benchmarks ran: the report's header still describes its sections
    report = {"run": run_meta, "sections": sections}
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    from benchmarks.plot import draw

    plot = "report.png" if draw(sections, args.out / "report.png") else None
    (args.out / "REPORT.md").write_text(markdown(report, RESULTS, plot))
    print(f"wrote {args.out / 'REPORT.md'}", flush=True)
    return 1 if failed else 0


def _load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


if __name__ == "__main__":
    sys.exit(main())
