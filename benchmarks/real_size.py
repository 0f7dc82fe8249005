"""Real-size denoisers on this CPU: time per denoising step, memory, and distance from float32, per precision.

    python -m benchmarks.real_size                                   # sd15, sdxl, sd3 x every mode (about 1 h)
    python -m benchmarks.real_size --models sd15 --modes fp32 int8-weight     # one model, two modes
    python -m benchmarks.real_size --models tiny --steps 2          # a smoke run in a minute

The denoisers (the part that runs every step, and most of the weights) are built with random weights from the
real models' configs, written out below: SD 1.5's UNet (860M parameters), SDXL's UNet (2.6B), SD 3 medium's
MMDiT (2.0B); FLUX.1-schnell's 12B transformer needs 24 GB in bfloat16, more than this machine has, so it is
measured by ``benchmarks/gpu_diffusers.py`` only. Timing does not depend on what the weights say. Nothing is
fetched.

Modes, each in its own process (so memory peaks are its own):

- ``fp32``: the reference; ``bf16``: weights and activations in bfloat16;
- ``int8-weight`` / ``int8-dynamic``: torchao's ``quantize_`` as limner's ``quantization`` applies it (computing
  in float32);
- ``gguf-q8``: the denoiser written as a GGUF file (Q8_0 for every linear weight whose rows fit the block, the
  rest float16), loaded the way limner loads a ``.gguf`` path, computing in bfloat16.

One step is one denoiser call at 512x512 (64x64 latents), batch 2 for the classifier-free-guided models (one
image with its negative prompt), ``--steps`` times after a warm-up; the figure is the median. Memory: the weights'
bytes, the process's resident set after setup, and its peak while stepping. Distance: the step's output against
the fp32 process's output for the same weights and inputs (max abs difference, and PSNR over the fp32 output's
range). Results go to ``benchmarks/results/real_size.json`` and ``real_size.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT, describe_machine

RESULTS = ROOT / "benchmarks" / "results"
MODELS = ("sd15", "sdxl", "sd3", "tiny")
MODES = ("fp32", "bf16", "int8-weight", "int8-dynamic", "gguf-q8")
MB = 2**20

# The real configs (diffusers' config.json of each model's denoiser), less the keys that are defaults.
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "sd15": (
        "UNet2DConditionModel",
        {"sample_size": 64, "cross_attention_dim": 768, "attention_head_dim": 8},
    ),
    "sdxl": (
        "UNet2DConditionModel",
        {
            "sample_size": 128,
            "block_out_channels": (320, 640, 1280),
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            "transformer_layers_per_block": (1, 2, 10),
            "attention_head_dim": (5, 10, 20),
            "cross_attention_dim": 2048,
            "use_linear_projection": True,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 256,
            "projection_class_embeddings_input_dim": 2816,
        },
    ),
    "sd3": (
        "SD3Transformer2DModel",
        {
            "sample_size": 128,
            "patch_size": 2,
            "in_channels": 16,
            "num_layers": 24,
            "attention_head_dim": 64,
            "num_attention_heads": 24,
            "joint_attention_dim": 4096,
            "caption_projection_dim": 1536,
            "pooled_projection_dim": 2048,
            "out_channels": 16,
            "pos_embed_max_size": 192,
        },
    ),
    "tiny": (  # the test suite's SD UNet widened to GGUF's 32-value blocks: for smoke runs
        "UNet2DConditionModel",
        {
            "sample_size": 8,
            "block_out_channels": (32, 64),
            "layers_per_block": 1,
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
            "cross_attention_dim": 32,
            "attention_head_dim": 8,
            "norm_num_groups": 8,
        },
    ),
}
TEXT_TOKENS = {"sd3": 77 + 256}  # SD 3: CLIP and T5 tokens side by side; the UNets read CLIP's 77
LATENT = 64  # 512 px / 8


# --- one (model, mode) in this process ---


def build(model: str) -> Any:
    """The denoiser of ``model`` with seeded random weights: the same weights in every process."""
    import diffusers
    import torch

    class_name, config = CONFIGS[model]
    torch.manual_seed(0)
    return getattr(diffusers, class_name)(**config).eval()


def inputs(model: str, denoiser: Any, dtype: Any) -> dict[str, Any]:
    """One guided step's inputs (batch 2: the prompt and the negative prompt), seeded."""
    import torch

    generator = torch.Generator().manual_seed(1)
    config = denoiser.config
    side = LATENT if model != "tiny" else 8
    batch = 2

    def noise(*shape: int) -> Any:
        return torch.randn(*shape, generator=generator).to(dtype)

    if model == "sd3":
        return {
            "hidden_states": noise(batch, config.in_channels, side, side),
            "encoder_hidden_states": noise(batch, TEXT_TOKENS["sd3"], config.joint_attention_dim),
            "pooled_projections": noise(batch, config.pooled_projection_dim),
            "timestep": torch.full((batch,), 500.0).to(dtype),
        }
    args = {
        "sample": noise(batch, config.in_channels, side, side),
        "timestep": torch.tensor(500),
        "encoder_hidden_states": noise(batch, 77, config.cross_attention_dim),
    }
    if config.addition_embed_type == "text_time":
        args["added_cond_kwargs"] = {
            "text_embeds": noise(batch, 1280),
            "time_ids": torch.tensor([[512.0, 512.0, 0.0, 0.0, 512.0, 512.0]] * batch).to(dtype),
        }
    return args


def prepare(model: str, mode: str, scratch: Path) -> tuple[Any, Any]:
    """The denoiser as ``mode`` runs it, and the dtype its inputs take."""
    import torch

    denoiser = build(model)
    if mode == "bf16":
        return denoiser.to(torch.bfloat16), torch.bfloat16
    if mode in ("int8-weight", "int8-dynamic"):
        from torchao.quantization import quantize_

        from limner.engines.quantization import _config

        quantize_(denoiser, _config(mode))
        return denoiser, torch.float32
    if mode == "gguf-q8":
        path = scratch / f"{model}-Q8_0.gguf"
        if not path.exists():
            write_gguf(denoiser.state_dict(), path)
        class_name = type(denoiser).__name__
        config_dir = scratch / f"{model}-config"
        denoiser.save_config(config_dir / "denoiser")
        del denoiser
        gc.collect()
        import diffusers
        from diffusers import GGUFQuantizationConfig

        loaded = getattr(diffusers, class_name).from_single_file(
            str(path),
            config=str(config_dir),
            subfolder="denoiser",
            quantization_config=GGUFQuantizationConfig(compute_dtype=torch.bfloat16),
            torch_dtype=torch.bfloat16,
            local_files_only=True,
        )
        return loaded.eval(), torch.bfloat16
    return denoiser, torch.float32


def write_gguf(state: dict[str, Any], path: Path) -> None:
    """``state`` as a GGUF file in diffusers' own layout: Q8_0 where rows fit the block, float16 elsewhere."""
    import gguf
    import torch

    block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0]
    writer = gguf.GGUFWriter(str(path), arch="diffusers")
    for name, tensor in state.items():
        if tensor.ndim == 2 and tensor.shape[-1] % block == 0:
            blocks = gguf.quants.quantize(tensor.float().numpy(), gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, blocks, raw_shape=blocks.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:  # norms, biases, convolutions: float16, as published GGUF denoisers keep them
            writer.add_tensor(name, tensor.to(torch.float16).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def measure(model: str, mode: str, steps: int, scratch: Path) -> dict[str, Any]:
    import numpy as np
    import torch

    from limner.engines.diffusers_loading import module_bytes

    torch.set_num_threads(max(1, torch.get_num_threads()))
    started = time.perf_counter()
    denoiser, dtype = prepare(model, mode, scratch)
    setup_s = time.perf_counter() - started
    args = inputs(model, denoiser, dtype)
    gc.collect()
    rss_after_setup = _status("VmRSS")
    _reset_peak()
    times, out = [], None
    with torch.inference_mode():
        denoiser(**args)  # warm-up
        for _ in range(steps):
            start = time.perf_counter()
            out = denoiser(**args, return_dict=False)[0]
            times.append(time.perf_counter() - start)
    output = out.float().numpy()
    reference_path = scratch / f"{model}-fp32.npy"
    row: dict[str, Any] = {
        "model": model,
        "mode": mode,
        "parameters_m": sum(p.numel() for p in denoiser.parameters()) / 1e6,
        "setup_s": setup_s,
        "step_s": statistics.median(times),
        "weights_mb": module_bytes(_Holder(denoiser)) / MB,
        "rss_after_setup_mb": rss_after_setup / 1024,
        "peak_rss_stepping_mb": _status("VmHWM") / 1024,
    }
    if mode == "fp32":
        np.save(reference_path, output)
    elif reference_path.exists():
        reference = np.load(reference_path)
        error = np.abs(output - reference)
        span = float(reference.max() - reference.min())
        mse = float((error**2).mean())
        row["max_abs"] = float(error.max())
        row["psnr_db"] = 10 * math.log10(span**2 / mse) if mse > 0 else math.inf
    return row


class _Holder:
    """What ``module_bytes`` reads: an object with ``components``."""

    def __init__(self, module: Any) -> None:
        self.components = {"denoiser": module}


def _status(field: str) -> int:
    """A ``/proc/self/status`` figure in kB (VmRSS: resident now; VmHWM: peak since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    """Linux: writing 5 to clear_refs resets the peak resident set (VmHWM), so the peak is the stepping's own."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


# --- the table ---


def markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    lines = [
        "# Real-size denoisers on the CPU (random weights from the real configs)",
        "",
        f"{machine['device']}, {results['threads']} threads, load average {machine['load_average']}; "
        f"torch {results['torch']}; one step = one denoiser call at 512x512 (batch 2, guided), "
        f"median of {results['steps']} after a warm-up.",
        "",
        "| model | params (M) | mode | step s | vs fp32 | weights MB | RSS after setup MB | peak RSS stepping MB "
        "| max abs vs fp32 | PSNR dB |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        if "error" in row:
            lines.append(f"| {row['model']} | | {row['mode']} | failed: {row['error']} | | | | | | |")
            continue
        base = next((r for r in results["rows"] if r["model"] == row["model"] and r["mode"] == "fp32"), None)
        speed = f"{base['step_s'] / row['step_s']:.2f}x" if base and "step_s" in base else "-"
        max_abs = f"{row['max_abs']:.3g}" if "max_abs" in row else "-"
        psnr = f"{row['psnr_db']:.1f}" if "psnr_db" in row else "-"
        parameters = (base or row)["parameters_m"]  # a GGUF model counts its packed bytes as parameters
        lines.append(
            f"| {row['model']} | {parameters:.0f} | {row['mode']} | {row['step_s']:.2f} | {speed} | "
            f"{row['weights_mb']:.0f} | {row['rss_after_setup_mb']:.0f} | {row['peak_rss_stepping_mb']:.0f} | "
            f"{max_abs} | {psnr} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=["sd15", "sdxl", "sd3"])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--one", nargs=3, metavar=("MODEL", "MODE", "SCRATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    if args.one:
        model, mode, scratch = args.one
        print(json.dumps(measure(model, mode, args.steps, Path(scratch))))
        return
    modes = ["fp32", *(mode for mode in args.modes if mode != "fp32")]  # the reference first
    rows = []
    with tempfile.TemporaryDirectory(prefix="limner-real-size-") as scratch:
        for model in args.models:
            for mode in modes:
                print(f"{model} {mode} ...", flush=True)
                command = [sys.executable, "-m", "benchmarks.real_size", "--steps", str(args.steps)]
                command += ["--threads", str(args.threads), "--one", model, mode, scratch]
                done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
                if done.returncode != 0:
                    reason = (done.stderr.strip().splitlines() or ["killed"])[-1][:160]
                    rows.append({"model": model, "mode": mode, "error": reason})
                else:
                    rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"  {rows[-1]}", flush=True)
    results = {
        "machine": describe_machine(args.threads),
        "threads": args.threads,
        "torch": torch.__version__,
        "steps": args.steps,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = "real_size" if set(args.models) != {"tiny"} else "real_size_smoke"
    (args.out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
