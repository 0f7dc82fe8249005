"""GPU profiles at 1024x1024: low-bit weights, denoising caches and compiled graphs, beside published anchors.

    python -m benchmarks.gpu_profiles                      # every config and profile on CUDA: about 25 minutes
    python -m benchmarks.gpu_profiles --configs flux-schnell                # FLUX only: about 10 minutes
    python -m benchmarks.gpu_profiles --configs tiny-flux --device cpu --profiles baseline int8-weight first-block
                                                                            # a smoke run anywhere (a minute)

``python -m benchmarks.gpu_diffusers`` runs this too, after its own table. Pipelines are built on the device with
random weights from the real configs (SDXL base, SD 3 medium, FLUX.1-schnell with its T5-XXL), nothing fetched;
each (config, profile) runs in a fresh process, so memory peaks and compile times are its own. Each profile goes
through limner's own code for it (``limner.engines.quantization.quantize``, ``denoise_cache.Cache``,
``compiling.compile_denoiser``):

- ``baseline``: the family's half type (float16; bfloat16 for FLUX);
- ``int8-weight``, ``fp8-weight``, ``int4-weight``: torchao, on the denoiser;
- ``first-block`` (threshold 0.08), ``taylorseer`` (interval 5): denoising caches, on FLUX only;
- ``compile-cold``: regional compilation with an empty compile cache; ``compile-warm``: a new process with the
  cache the cold run left, as a restart.

Per profile: the first call (compiling, for the compile profiles), the median of ``--repeats`` calls after it,
the CUDA memory peak, and how far the image is from the baseline's (max abs of 0-255 pixels, PSNR). Anchors:
SDXL 1024x1024, 30 steps on an A100: 7.36 s fp32, 2.54 s compiled, 2.43 s int8 (diffusers' fast-diffusion
tutorial); FLUX.1-schnell 1024x1024, 4 steps on an H100: 1.12 s bf16, 0.775 s compiled. Results go to
``benchmarks/results/gpu_profiles.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
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
PROMPT = "a lighthouse on a cliff at sunset, oil painting"
MB = 2**20
# config -> (family, side, steps, guidance)
CONFIGS: dict[str, tuple[str, int, int, float]] = {
    "sdxl": ("sdxl", 1024, 30, 5.0),
    "sd3": ("sd3", 1024, 28, 7.0),
    "flux-schnell": ("flux-schnell", 1024, 4, 0.0),
    "tiny-flux": ("flux-schnell", 64, 4, 0.0),  # the test suite's tiny FLUX, for smoke runs
}
DEFAULT_CONFIGS = ("sdxl", "sd3", "flux-schnell")
PROFILES = (
    "baseline",
    "int8-weight",
    "fp8-weight",
    "int4-weight",
    "first-block",
    "taylorseer",
    "compile-cold",
    "compile-warm",
)
CACHES: dict[str, tuple[float | None, int | None]] = {"first-block": (0.08, None), "taylorseer": (None, 5)}
"""Each cache's (threshold, interval), as a catalog entry's ``cache_threshold`` / ``cache_interval``."""
ANCHORS = {
    "sdxl": "A100, 30 steps: 7.36 s fp32, 2.54 s compiled, 2.43 s int8",
    "flux-schnell": "H100, 4 steps: 1.12 s bf16, 0.775 s compiled",
}


# --- pipelines on the device ---


def pipeline(config: str, device: Any, dtype: Any) -> Any:
    import torch

    torch.manual_seed(0)
    if config == "tiny-flux":
        from diffusers import FluxPipeline

        from tests.support.tiny_families import build_tiny_flux

        path = Path(tempfile.mkdtemp(prefix="limner-tiny-flux-"))
        build_tiny_flux(path)
        return FluxPipeline.from_pretrained(path, local_files_only=True, torch_dtype=dtype).to(device)
    from diffusers import EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler

    # Schedulers keep numpy-backed tables: made on the host, before the device context below.
    scheduler = (
        EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
        if config == "sdxl"
        else FlowMatchEulerDiscreteScheduler(shift=3.0 if config == "sd3" else 1.0)
    )
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # random weights made in their own type where they run: 12B parameters of
    try:  # FLUX and 4.7B of T5-XXL in float32 would not fit beside their half-precision copies
        with torch.device(device):
            pipe = {"sdxl": _sdxl, "sd3": _sd3, "flux-schnell": _flux}[config](scheduler)
    finally:
        torch.set_default_dtype(default)
    return pipe.to(dtype=dtype)


def _tokenizer() -> Any:
    from tests.support.tiny_diffusers import _tiny_tokenizer

    with tempfile.TemporaryDirectory() as scratch:
        return _tiny_tokenizer(Path(scratch))


def _t5_xxl(tokenizer: Any) -> Any:
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=32128,
        d_model=4096,
        d_kv=64,
        d_ff=10240,
        num_layers=24,
        num_heads=64,
        feed_forward_proj="gated-gelu",
        decoder_start_token_id=0,
    )
    return T5EncoderModel(config)


def _vae16() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=16,
        sample_size=1024,
        scaling_factor=1.5305,
        shift_factor=0.0609,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def _sdxl(scheduler: Any) -> Any:
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    from benchmarks.gpu_diffusers import _clip, _vae

    tokenizer = _tokenizer()
    unet = UNet2DConditionModel(
        sample_size=128,
        block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),
        cross_attention_dim=2048,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    )
    return StableDiffusionXLPipeline(
        vae=_vae(0.13025),
        text_encoder=_clip(tokenizer, 768, 12, 12),
        text_encoder_2=_clip(tokenizer, 1280, 32, 20, projection=1280),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
    )


def _sd3(scheduler: Any) -> Any:
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

    from benchmarks.gpu_diffusers import _clip

    tokenizer = _tokenizer()
    transformer = SD3Transformer2DModel(
        sample_size=128,
        patch_size=2,
        in_channels=16,
        num_layers=24,
        attention_head_dim=64,
        num_attention_heads=24,
        joint_attention_dim=4096,
        caption_projection_dim=1536,
        pooled_projection_dim=2048,
        out_channels=16,
        pos_embed_max_size=192,
    )
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=_vae16(),
        text_encoder=_clip(tokenizer, 768, 12, 12, projection=768),
        tokenizer=tokenizer,
        text_encoder_2=_clip(tokenizer, 1280, 32, 20, projection=1280),
        tokenizer_2=tokenizer,
        text_encoder_3=_t5_xxl(tokenizer),
        tokenizer_3=tokenizer,
    )


def _flux(scheduler: Any) -> Any:
    from diffusers import FluxPipeline, FluxTransformer2DModel

    from benchmarks.gpu_diffusers import _clip

    tokenizer = _tokenizer()
    return FluxPipeline(
        transformer=FluxTransformer2DModel(guidance_embeds=False),  # diffusers' defaults are FLUX.1's shapes
        scheduler=scheduler,
        vae=_vae16(),
        text_encoder=_clip(tokenizer, 768, 12, 12),
        tokenizer=tokenizer,
        text_encoder_2=_t5_xxl(tokenizer),
        tokenizer_2=tokenizer,
    )


# --- one profile, in this process ---


def run_profile(config: str, profile: str, device_name: str, scratch: Path, repeats: int) -> dict[str, Any]:
    import numpy as np
    import torch

    from limner.engines.compiling import compile_denoiser, use_cache_dir
    from limner.engines.denoise_cache import Cache
    from limner.engines.families import FAMILIES
    from limner.engines.quantization import quantize

    family_name, side, steps, guidance = CONFIGS[config]
    device = torch.device(device_name)
    cuda = device.type == "cuda"
    dtype = getattr(torch, FAMILIES[family_name].cuda_dtype) if cuda else torch.float32
    if profile.startswith("compile"):
        use_cache_dir(scratch / f"{config}-compile-cache")  # the warm run finds what the cold run left
    started = time.perf_counter()
    pipe = pipeline(config, device, dtype)
    pipe.set_progress_bar_config(disable=True)
    if profile in ("int8-weight", "fp8-weight", "int4-weight"):
        quantize(pipe, profile, ("denoiser",))
    if profile in CACHES:
        Cache(profile, *CACHES[profile]).attach(pipe)
    if profile.startswith("compile"):
        compile_denoiser(pipe)
    build_s = time.perf_counter() - started

    def call() -> Any:
        generator = torch.Generator(device=device).manual_seed(7)
        kwargs = {"num_inference_steps": steps, "guidance_scale": guidance, "height": side, "width": side}
        if family_name.startswith("flux"):
            kwargs["max_sequence_length"] = 256
        return pipe(prompt=PROMPT, generator=generator, **kwargs).images[0]

    def timed() -> tuple[float, Any]:
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.inference_mode():
            image = call()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start, image

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    first_s, image = timed()
    times = [timed()[0] for _ in range(repeats)]
    pixels = np.asarray(image, dtype=np.float32)
    row: dict[str, Any] = {
        "config": config,
        "profile": profile,
        "build_s": build_s,
        "first_call_s": first_s,
        "image_s": statistics.median(times),
        "cuda_peak_mb": torch.cuda.max_memory_allocated() / MB if cuda else None,
    }
    reference = scratch / f"{config}-baseline.npy"
    if profile == "baseline":
        np.save(reference, pixels)
    elif reference.exists():
        error = np.abs(pixels - np.load(reference))
        mse = float((error**2).mean())
        row["max_abs"] = float(error.max())
        row["psnr_db"] = 10 * math.log10(255**2 / mse) if mse > 0 else math.inf
    return row


# --- all of them ---


def measure(configs: list[str], profiles: list[str], device: str, repeats: int) -> list[dict[str, Any]]:
    rows = []
    ordered = ["baseline", *(p for p in profiles if p != "baseline")]  # the reference image first
    with tempfile.TemporaryDirectory(prefix="limner-gpu-profiles-") as scratch:
        for config in configs:
            for profile in ordered:
                if profile in CACHES and not CONFIGS[config][0].startswith("flux"):
                    continue  # diffusers' cache hooks: FLUX's transformer only, among limner's families
                print(f"{config} {profile} ...", flush=True)
                command = [sys.executable, "-m", "benchmarks.gpu_profiles", "--device", device]
                command += ["--repeats", str(repeats), "--one", config, profile, scratch]
                done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    reason = (done.stderr.strip().splitlines() or ["killed"])[-1][:200]
                    rows.append({"config": config, "profile": profile, "error": reason})
                else:
                    rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"  {rows[-1]}", flush=True)
    return rows


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# GPU profiles at 1024x1024 (random-weight pipelines from the real configs)",
        "",
        f"{results['machine']['device']}; torch {results['machine']['torch']}; median of {results['repeats']} "
        "images after the first call.",
        "",
        "| config | profile | first call s | image s | vs baseline | CUDA peak MB | max abs | PSNR dB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        if "error" in row:
            lines.append(f"| {row['config']} | {row['profile']} | failed: {row['error']} | | | | | |")
            continue
        base = next((r for r in results["rows"] if r["config"] == row["config"] and r["profile"] == "baseline"), None)
        speed = f"{base['image_s'] / row['image_s']:.2f}x" if base and "image_s" in base else "-"
        peak = f"{row['cuda_peak_mb']:.0f}" if row["cuda_peak_mb"] is not None else "-"
        max_abs = f"{row['max_abs']:.0f}" if "max_abs" in row else "-"
        psnr = f"{row['psnr_db']:.1f}" if "psnr_db" in row else "-"
        lines.append(
            f"| {row['config']} | {row['profile']} | {row['first_call_s']:.2f} | {row['image_s']:.3f} | {speed} | "
            f"{peak} | {max_abs} | {psnr} |"
        )
    lines += ["", "Published anchors:", *(f"- {name}: {text}" for name, text in ANCHORS.items())]
    return "\n".join(lines) + "\n"


def write(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_profiles.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "gpu_profiles.md").write_text(markdown(results))
    print(markdown(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(DEFAULT_CONFIGS))
    parser.add_argument("--profiles", nargs="+", choices=PROFILES, default=list(PROFILES))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--one", nargs=3, metavar=("CONFIG", "PROFILE", "SCRATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        config, profile, scratch = args.one
        print(json.dumps(run_profile(config, profile, args.device, Path(scratch), args.repeats)))
        return
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("No CUDA device here: run on a GPU, or smoke with --configs tiny-flux --device cpu.")
    rows = measure(args.configs, args.profiles, args.device, args.repeats)
    write({"machine": describe_machine(torch.get_num_threads()), "repeats": args.repeats, "rows": rows}, args.out)


if __name__ == "__main__":
    main()
