"""Upscaling on this CPU: an ESRGAN-shaped upscaler at real size, and what a hires fix adds to a generation.

1. ``esrgan``: RRDBNet as ESRGAN and Real-ESRGAN ship it (23 RRDB blocks, 64 features, growth 32, 4x;
   16.7 M parameters), random weights written to a ``.pth`` file, loaded by spandrel through limner's
   ``ModelUpscaler``; one 256x256 image to 1024x1024: load time, the median of ``--runs`` upscales after a
   warm-up, and the peak resident memory of the process (each measurement in a fresh process, so the peak
   is its own: the Python and torch baseline is reported beside it). The built-in filter (Lanczos and an
   unsharp mask) on the same image, for scale.
2. ``hires``: through the app in-process (the whole service: plan, generate, upscale stage, finish), a
   generation at ``--size`` against the same with ``upscale: {scale: 2, refine: 0.3}`` (and without refine),
   medians of ``--runs``. ``--model-dir`` names a diffusers directory; without it a tiny random pipeline
   stands in (the tests' own), which shows the service's share, not a real model's cost.

    python -m benchmarks.upscale                   # both, full size (minutes on 2 cores)
    python -m benchmarks.upscale --quick           # a smoke run: 2 blocks, 64x64 in, 1 run
    python -m benchmarks.upscale --model-dir /models/sd15 --size 512

Results go to ``benchmarks/results/upscale.json`` and ``upscale.md``. Nothing here is collected by pytest.
"""

from __future__ import annotations

import argparse
import base64
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
REAL_BLOCKS = 23
REAL_FEATURES = 64


def peak_mib() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def esrgan_child(blocks: int, features: int, side: int, runs: int) -> dict[str, Any]:
    """In a fresh process: write, load and run the upscaler; seconds and peak memory."""
    import torch
    from PIL import Image

    from limner.engines.upscaler import ModelUpscaler, filter_upscale
    from tests.support.tiny_upscalers import write_upscaler

    torch.set_grad_enabled(False)
    baseline = peak_mib()
    image = Image.effect_noise((side, side), 64).convert("RGB")
    with tempfile.TemporaryDirectory() as scratch:
        path = write_upscaler(Path(scratch) / "rrdbnet.pth", blocks=blocks, features=features, scale=4)
        started = time.perf_counter()
        model = ModelUpscaler(path, device="cpu")
        model.load()
        load_s = time.perf_counter() - started
    loaded = peak_mib()
    params = model.parameters
    model.upscale(image, 4)  # warm-up
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        out = model.upscale(image, 4)
        seconds.append(time.perf_counter() - started)
    assert out.size == (side * 4, side * 4)
    filtered = []
    for _ in range(max(3, runs)):
        started = time.perf_counter()
        filter_upscale(image, 4)
        filtered.append(time.perf_counter() - started)
    return {
        "blocks": blocks,
        "features": features,
        "parameters": params,
        "input": f"{side}x{side}",
        "output": f"{side * 4}x{side * 4}",
        "load_s": round(load_s, 3),
        "upscale_s": round(statistics.median(seconds), 3),
        "upscale_runs_s": [round(value, 3) for value in seconds],
        "filter_s": round(statistics.median(filtered), 4),
        "peak_mib": round(peak_mib(), 1),
        "peak_after_load_mib": round(loaded, 1),
        "baseline_mib": round(baseline, 1),
        "threads": torch.get_num_threads(),
    }


def hires(model_dir: Path | None, size: int, runs: int, steps: int) -> dict[str, Any]:
    """A generation against the same with the upscale stage (with and without refine), through the app."""
    from fastapi.testclient import TestClient

    from limner.app import create_app
    from limner.engines.catalog import ModelEntry
    from limner.settings import Settings

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        tiny = model_dir is None
        if model_dir is None:
            from tests.support.tiny_diffusers import build_tiny_sd

            model_dir = build_tiny_sd(root / "tiny-sd")
        models = [ModelEntry(id="model", engine="diffusers", path=model_dir, default_steps=steps, max_queue=4)]
        settings = Settings(
            data_dir=root / "data", models=models, default_model="model", c2pa="off", allowed_hosts=["testserver"]
        )
        body = {"model": "model", "prompt": "a lighthouse at dusk", "size": f"{size}x{size}", "seed": 1}
        cases = {
            "generate": {},
            "generate + 2x upscale (lanczos)": {"upscale": {"scale": 2}},
            "generate + 2x upscale + refine 0.3": {"upscale": {"scale": 2, "refine": 0.3}},
        }
        measured: dict[str, Any] = {}
        with TestClient(create_app(settings)) as client:
            for name, extra in cases.items():
                seconds = []
                for attempt in range(runs + 1):  # the first loads the model (or warms it): not counted
                    started = time.perf_counter()
                    response = client.post(
                        "/v1/images/generations", json={**body, **extra, "response_format": "b64_json"}
                    )
                    elapsed = time.perf_counter() - started
                    assert response.status_code == 200, response.text
                    if attempt:
                        seconds.append(elapsed)
                measured[name] = {
                    "seconds": round(statistics.median(seconds), 3),
                    "size": response.json()["size"],
                    "bytes": len(base64.b64decode(response.json()["data"][0]["b64_json"])),
                }
    base = measured["generate"]["seconds"]
    for values in measured.values():
        values["x_generate"] = round(values["seconds"] / base, 2) if base else None
    return {"model": "tiny random SD (tests)" if tiny else str(model_dir), "steps": steps, "cases": measured}


def markdown(result: dict[str, Any]) -> str:
    esr = result["esrgan"]
    lines = [
        "# Upscaling on this CPU",
        "",
        f"{result['machine']}, {result['date']}; `python -m benchmarks.upscale {result['args']}`",
        "",
        f"## ESRGAN-shaped upscaler (RRDBNet, {esr['blocks']} blocks, {esr['features']} features, "
        f"{esr['parameters'] / 1e6:.1f} M parameters, random weights), {esr['input']} to {esr['output']}",
        "",
        "| load | upscale (median) | peak memory | after load | Python + torch baseline | built-in filter |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {esr['load_s']} s | {esr['upscale_s']} s | {esr['peak_mib']} MiB | {esr['peak_after_load_mib']} MiB "
        f"| {esr['baseline_mib']} MiB | {esr['filter_s'] * 1000:.1f} ms |",
        "",
        f"torch threads: {esr['threads']}; runs: {esr['upscale_runs_s']}",
    ]
    if "hires" in result:
        hires_result = result["hires"]
        lines += [
            "",
            f"## Hires fix ({hires_result['model']}, {hires_result['steps']} steps)",
            "",
            "| request | size | seconds (median) | x generate |",
            "| --- | --- | ---: | ---: |",
        ]
        for name, values in hires_result["cases"].items():
            lines.append(f"| {name} | {values['size']} | {values['seconds']} | {values['x_generate']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.upscale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 blocks, a 64x64 input, 1 run: a smoke run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model-dir", type=Path, default=None, help="a diffusers directory for the hires fix")
    parser.add_argument("--size", type=int, default=256, help="the hires fix's base generation size")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--skip-hires", action="store_true")
    parser.add_argument(
        "--child", nargs=4, type=int, metavar=("BLOCKS", "FEATURES", "SIDE", "RUNS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(esrgan_child(*args.child)))
        return 0
    blocks, features, side, runs = (
        (2, REAL_FEATURES, 64, 1) if args.quick else (REAL_BLOCKS, REAL_FEATURES, 256, args.runs)
    )
    child = subprocess.run(
        [sys.executable, "-m", "benchmarks.upscale", "--child", str(blocks), str(features), str(side), str(runs)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, Python {platform.python_version()}",
        "args": " ".join(argv if argv is not None else sys.argv[1:]),
        "esrgan": json.loads(child.stdout.strip().splitlines()[-1]),
    }
    if not args.skip_hires:
        size, steps, hires_runs = (64, 2, 1) if args.quick else (args.size, args.steps, args.runs)
        result["hires"] = hires(args.model_dir, size, hires_runs, steps)
    report = markdown(result)
    print(report)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "upscale.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / "upscale.md").write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
