"""Cold start with ``compile = true``: the first load compiles, a restart reads the compile cache back.

    python -m benchmarks.compile_warm_start                       # the tiny SD pipeline, about 5 minutes here
    python -m benchmarks.compile_warm_start --config sd-turbo     # SD 2.1-sized (865M UNet): much longer on a CPU
    python -m benchmarks.compile_warm_start --device cuda --config sd-turbo

Each start is a fresh process, as a restart is: it builds limner's diffusers engine for the pipeline, loads it
(with ``compile = true`` that includes the warm-up image that compiles the denoiser) and makes one image,
timing the load and the first image. Three starts: without ``compile`` (the baseline), with ``compile`` and an
empty data directory (cold: everything compiled), and again with the same data directory (warm: Inductor's
cache in ``<data_dir>/compile-cache`` read back). Results go to ``benchmarks/results/compile_warm_start.json``
and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT, describe_machine

RESULTS = ROOT / "benchmarks" / "results"


def one_start(path: Path, data_dir: Path, compile_: bool, device: str, side: int) -> dict[str, Any]:
    """In this (fresh) process: load the model as limner does, then make one image."""
    import asyncio

    from limner.core.models import EngineRequest, Mode
    from limner.engines.catalog import ModelEntry
    from limner.engines.registry import default_factories

    entry = ModelEntry(
        id="bench",
        engine="diffusers",
        path=path,
        device=device,
        compile=compile_,
        default_size=(side, side),
        default_steps=1,
        default_guidance=0.0,
    )
    engine: Any = default_factories(data_dir)["diffusers"](entry)

    async def run() -> dict[str, Any]:
        started = time.perf_counter()
        await engine.load()
        loaded = time.perf_counter()
        request = EngineRequest(mode=Mode.GENERATE, prompt="a boat", width=side, height=side, seeds=[1], steps=1)
        await engine.generate(request)
        done = time.perf_counter()
        await engine.aclose()
        return {
            "load_s": loaded - started,
            "warm_up_s": engine.warm_up_seconds,
            "first_image_s": done - loaded,
            "ready_and_first_image_s": done - started,
        }

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=("tiny", "sd-turbo", "sdxl-turbo"), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--one", nargs=4, metavar=("PATH", "DATA", "COMPILE", "SIDE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        path, data, compile_, side = args.one
        print(json.dumps(one_start(Path(path), Path(data), compile_ == "1", args.device, int(side))))
        return

    import torch

    from benchmarks.gpu_diffusers import build

    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="limner-compile-") as scratch:
        path = Path(scratch) / args.config
        dtype = torch.float16 if args.device == "cuda" else torch.float32
        side, _ = build(args.config, path, dtype)
        data = Path(scratch) / "data"
        for name, compile_ in (("eager", "0"), ("compile, cold cache", "1"), ("compile, warm cache", "1")):
            print(f"{name} ...", flush=True)
            command = [sys.executable, "-m", "benchmarks.compile_warm_start", "--device", args.device]
            command += ["--one", str(path), str(data), compile_, str(side)]
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
            rows[name] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"  {rows[name]}", flush=True)
        cache_files = sum(1 for item in (data / "compile-cache").rglob("*") if item.is_file())
    results = {"machine": describe_machine(torch.get_num_threads()), "config": args.config, "side": side}
    results |= {"starts": rows, "compile_cache_files": cache_files}
    lines = [
        f"# Cold start with compile = true ({args.config}, {side}x{side}, {args.device})",
        "",
        f"{results['machine']['device']}, load average {results['machine']['load_average']}; "
        "each start a fresh process: load (with compile: the warm-up image that compiles) and one image.",
        "",
        "| start | load s | of which warm-up s | first image s | ready + first image s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        warm = f"{row['warm_up_s']:.1f}" if row["warm_up_s"] is not None else "-"
        lines.append(
            f"| {name} | {row['load_s']:.1f} | {warm} | {row['first_image_s']:.2f} | "
            f"{row['ready_and_first_image_s']:.1f} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compile_warm_start.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "compile_warm_start.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
