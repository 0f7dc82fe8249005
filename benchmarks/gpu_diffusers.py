"""GPU benchmark: SD-Turbo / SDXL-Turbo-style pipelines, per stage, per batch size, limner over HTTP vs direct.

    python -m benchmarks.gpu_diffusers                       # every config, on CUDA
    python -m benchmarks.gpu_diffusers --configs tiny --device cpu --repeats 2   # a smoke run anywhere

Pipelines are built from configs with random weights (timing does not depend on what the weights say) and
saved as ordinary diffusers directories, so limner loads them with its real loading code; nothing is fetched.

- ``tiny``: a tiny SDXL-Turbo-shaped pipeline (the test suite's), for the server's fixed costs;
- ``sd-turbo``: SD 2.1's UNet, VAE and OpenCLIP-H text encoder at 512x512, 1 step;
- ``sdxl-turbo``: SDXL's UNet, VAE and both text encoders at 512x512, 1 step.

For each config and batch size (1, 4, 8) it measures, median of ``--repeats`` runs after a warm-up: the stages
called one by one (text encode, denoise, VAE decode, PNG encode, store), the whole pipeline call (images/s),
and the same request through limner's OpenAI endpoint over HTTP on 127.0.0.1 from a server in its own process
(images/s and the ratio to the direct call), with CUDA memory peaks. Results go to ``benchmarks/results/gpu.json``
and ``gpu.md``, which the README shows. Without CUDA (and no ``--device``), it writes a note saying so.

``--scheduling`` adds issue 26's comparison for the SD-Turbo-shaped pipeline (``tiny`` in a smoke run): step-level
against request-level batching under Poisson arrivals at 50/90/120% of capacity, in process, at
``--scheduling-steps`` (SD-Turbo takes 1 to 4) and 512x512, written to ``gpu_scheduling.{json,md}``:

    python -m benchmarks.gpu_diffusers --configs sd-turbo --scheduling
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import tomlkit

from benchmarks.harness import ROOT, Server, describe_machine, free_port, thread_env

RESULTS = ROOT / "benchmarks" / "results"
BATCHES = (1, 4, 8)
PROMPT = "a lighthouse on a cliff at sunset, oil painting"
CONFIGS = ("tiny", "sd-turbo", "sdxl-turbo")
MB = 2**20


# --- pipelines from configs ---


def build(config: str, path: Path, dtype: Any) -> tuple[int, int]:
    """Save a random-weight pipeline of ``config`` to ``path``; returns (side in pixels, steps)."""
    import torch

    torch.manual_seed(0)
    if config == "tiny":
        sys.path.insert(0, str(ROOT))
        from tests.support.tiny_families import build_tiny_sdxl

        build_tiny_sdxl(path, turbo=True)
        return 64, 1
    pipe = _sd_turbo() if config == "sd-turbo" else _sdxl_turbo()
    pipe.to(dtype=dtype).save_pretrained(path)
    return 512, 1


def _tokenizer() -> Any:
    from tests.support.tiny_diffusers import _tiny_tokenizer

    with tempfile.TemporaryDirectory() as scratch:
        return _tiny_tokenizer(Path(scratch))


def _clip(tokenizer: Any, hidden: int, layers: int, heads: int, projection: int | None = None) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=49408,  # the real vocabulary size; the byte tokenizer uses the first few hundred ids
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        hidden_act="gelu",
        projection_dim=projection or hidden,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def _vae(scaling: float) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
        scaling_factor=scaling,
    )


def _turbo_scheduler() -> Any:
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="trailing"
    )


def _sd_turbo() -> Any:
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    tokenizer = _tokenizer()
    unet = UNet2DConditionModel(
        sample_size=64,
        block_out_channels=(320, 640, 1280, 1280),
        cross_attention_dim=1024,
        attention_head_dim=(5, 10, 20, 20),
        use_linear_projection=True,
    )
    return StableDiffusionPipeline(
        vae=_vae(0.18215),
        text_encoder=_clip(tokenizer, 1024, 23, 16),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=_turbo_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _sdxl_turbo() -> Any:
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    tokenizer = _tokenizer()
    unet = UNet2DConditionModel(
        sample_size=64,
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
        scheduler=_turbo_scheduler(),
    )


# --- direct measurements ---


class Clock:
    """Wall time of a block with the device synchronised on both sides; CUDA peaks per measurement."""

    def __init__(self, device: Any) -> None:
        import torch

        self.torch, self.cuda = torch, device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def time(self, fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
        fn()  # warm-up (kernel selection, allocator)
        times, out = [], None
        for _ in range(repeats):
            self.sync()
            start = time.perf_counter()
            out = fn()
            self.sync()
            times.append(time.perf_counter() - start)
        return statistics.median(times), out

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()

    def peak_mb(self) -> float | None:
        return self.torch.cuda.max_memory_allocated() / MB if self.cuda else None


def direct(path: Path, side: int, steps: int, device: Any, dtype: Any, repeats: int) -> list[dict[str, Any]]:
    import torch
    from diffusers import DiffusionPipeline

    from limner.engines.diffusers_loading import dtype_argument
    from limner.media.store import LocalMediaStore

    pipe: Any = DiffusionPipeline.from_pretrained(path, local_files_only=True, **dtype_argument(dtype)).to(device)
    pipe.set_progress_bar_config(disable=True)
    store = LocalMediaStore(Path(tempfile.mkdtemp(prefix="limner-gpu-bench-")))
    common = {"num_inference_steps": steps, "guidance_scale": 0.0, "height": side, "width": side}
    rows = [_batch(pipe, batch, common, store, Clock(device), repeats) for batch in BATCHES]
    pipe.to("cpu")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def _batch(pipe: Any, batch: int, common: dict[str, Any], store: Any, clock: Clock, repeats: int) -> dict[str, Any]:
    """One batch size, stage by stage (each stage's input made by the stage before it), then the whole call."""
    import torch

    from limner.media.encode import encode_image

    device = pipe.device
    clock.reset_peak()
    with torch.inference_mode():
        t_text, encoded = clock.time(
            lambda: pipe.encode_prompt(
                prompt=PROMPT, device=device, num_images_per_prompt=batch, do_classifier_free_guidance=False
            ),
            repeats,
        )
        xl = hasattr(pipe, "text_encoder_2")
        embeds = {"prompt_embeds": encoded[0]} | ({"pooled_prompt_embeds": encoded[2]} if xl else {})
        t_denoise, latents = clock.time(lambda: pipe(**embeds, **common, output_type="latent").images, repeats)
        scale = pipe.vae.config.scaling_factor

        def decode() -> Any:
            pixels = pipe.vae.decode(latents.to(pipe.vae.dtype) / scale, return_dict=False)[0]
            return pipe.image_processor.postprocess(pixels, output_type="pil")

        t_decode, images = clock.time(decode, repeats)
        t_full, _ = clock.time(lambda: pipe(prompt=PROMPT, num_images_per_prompt=batch, **common).images, repeats)
    t_encode, pngs = clock.time(lambda: [encode_image(image, "png")[0] for image in images], repeats)
    t_store, _ = clock.time(lambda: asyncio.run(_store_all(store, pngs)), repeats)
    return {
        "batch": batch,
        "text_encode_s": t_text,
        "denoise_s": t_denoise,
        "vae_decode_s": t_decode,
        "png_encode_s": t_encode,
        "store_s": t_store,
        "pipeline_s": t_full,
        "direct_images_per_s": batch / t_full,
        "direct_with_encode_store_images_per_s": batch / (t_full + t_encode + t_store),
        "cuda_peak_mb": clock.peak_mb(),
    }


async def _store_all(store: Any, pngs: list[bytes]) -> None:
    for data in pngs:
        await store.put(data, mime_type="image/png", owner="bench")


# --- limner over HTTP ---


def serve(path: Path, home: Path, model_id: str, steps: int, device: str) -> Server:
    """limner in its own process serving only this pipeline, as ``limner serve`` with a ``limner.toml``."""
    home.mkdir(parents=True, exist_ok=True)
    entry = {
        "id": model_id,
        "engine": "diffusers",
        "path": str(path),
        "device": device,
        "default_steps": steps,
        "default_guidance": 0.0,
        "options": {"max_images": max(BATCHES)},
        "max_queue": 64,
    }
    config = {"data_dir": str(home / "data"), "default_model": model_id, "log_level": "WARNING", "models": [entry]}
    (home / "limner.toml").write_text(tomlkit.dumps(config))
    env = thread_env(int(os.environ.get("OMP_NUM_THREADS", "4"))) | {"LIMNER_CONFIG": str(home / "limner.toml")}
    port = free_port()
    command = [sys.executable, "-m", "limner.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    log_path = home / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(model_id, process, port, log_path)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"limner exited with {process.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=1.0).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"limner did not start:\n{server.log_tail()}")


def over_http(server: Server, model_id: str, side: int, repeats: int) -> dict[int, float]:
    """Images/s per batch size through the OpenAI endpoint (b64_json: no second request for the file)."""
    out = {}
    with httpx.Client(base_url=server.url, timeout=600) as client:
        for batch in BATCHES:
            body = {"model": model_id, "prompt": PROMPT, "n": batch, "size": f"{side}x{side}"}
            body["response_format"] = "b64_json"

            def call(body: dict[str, Any] = body) -> None:
                response = client.post("/v1/images/generations", json=body)
                response.raise_for_status()
                assert len(response.json()["data"]) == body["n"]
                base64.b64decode(response.json()["data"][0]["b64_json"])

            call()  # warm-up: the first request loads the model
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
            out[batch] = batch / statistics.median(times)
    return out


# --- step-level vs request-level batching (issue 26) ---


def scheduling(path: Path, home: Path, side: int, device: str, args: argparse.Namespace) -> dict[str, Any]:
    """The pipeline served in this process by each batcher, under the same Poisson arrivals."""
    from benchmarks.scheduling import compare
    from limner.app import build_state
    from limner.core.models import ImageRequest, SizeSpec
    from limner.engines.catalog import ModelEntry
    from limner.settings import Settings

    states = {}
    for mode, stepped in (("request-level", False), ("step-level", True)):
        entry = ModelEntry(
            id="turbo",
            engine="diffusers",
            path=path,
            device=device,
            family="sd-turbo" if path.name == "sd-turbo" else None,  # tiny: SDXL-Turbo, from its configs
            default_steps=args.scheduling_steps,
            default_guidance=0.0,
            step_batching=stepped,
            batch_window_ms=25.0,
            max_batch_images=max(BATCHES),
            options={"max_images": max(BATCHES)},
            max_queue=64,
        )
        settings = Settings(data_dir=home / mode, models=[entry], default_model="turbo", result_cache_bytes=0)
        states[mode] = build_state(settings)

    def make(seed: int) -> ImageRequest:
        return ImageRequest(prompt=PROMPT, model="turbo", seed=seed, size=SizeSpec(side, side))

    print(f"{path.name}: step-level vs request-level batching", flush=True)
    result = asyncio.run(
        compare(states, make, seconds=args.scheduling_seconds, capacity=None, capacity_requests=4 * max(BATCHES))
    )
    return {"steps": args.scheduling_steps, "side": side, **result}


def scheduling_markdown(results: dict[str, Any]) -> str:
    from benchmarks.scheduling import table

    lines = ["# Step-level vs request-level batching on the GPU", ""]
    for config, compared in results["scheduling"].items():
        lines += [
            f"{config} on {results['device']} ({results['dtype']}), {compared['side']}x{compared['side']}, "
            f"{compared['steps']} steps; capacity {compared['capacity_per_s']} requests/s.",
            "",
            *table(compared),
            "",
        ]
    return "\n".join(lines)


# --- report ---


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# GPU benchmark (random-weight pipelines built from configs)",
        "",
        f"Device: {results['device']}; torch {results['torch']}; dtype {results['dtype']}; "
        f"median of {results['repeats']} runs after a warm-up.",
        "",
        "| config | batch | text encode ms | denoise ms | VAE decode ms | PNG encode ms | store ms | direct img/s "
        "| limner HTTP img/s | HTTP / direct | HTTP / direct+encode+store | CUDA peak MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for config, rows in results["configs"].items():
        for row in rows:
            peak = f"{row['cuda_peak_mb']:.0f}" if row["cuda_peak_mb"] is not None else "-"
            lines.append(
                f"| {config} | {row['batch']} | {row['text_encode_s'] * 1e3:.1f} | {row['denoise_s'] * 1e3:.1f} | "
                f"{row['vae_decode_s'] * 1e3:.1f} | {row['png_encode_s'] * 1e3:.1f} | {row['store_s'] * 1e3:.1f} | "
                f"{row['direct_images_per_s']:.2f} | {row['http_images_per_s']:.2f} | {row['http_ratio']:.2f}x | "
                f"{row['http_ratio_with_encode_store']:.2f}x | {peak} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--device", help="cuda (default when available) or cpu for a smoke run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS, help="where gpu.json and gpu.md go")
    parser.add_argument("--scheduling", action="store_true", help="also step-level vs request-level batching")
    parser.add_argument("--scheduling-only", action="store_true", help="only the batching comparison")
    parser.add_argument("--scheduling-steps", type=int, default=4)
    parser.add_argument("--scheduling-seconds", type=float, default=30.0)
    args = parser.parse_args()

    import torch

    if args.device is None and not torch.cuda.is_available():
        note = "No CUDA device on this machine: GPU figures not measured (run with a GPU, or --device cpu to smoke)."
        print(note)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu.json").write_text(json.dumps({"note": note, "machine": describe_machine(1)}, indent=2))
        return
    device = torch.device(args.device or "cuda")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "dtype": str(dtype).removeprefix("torch."),
        "repeats": args.repeats,
        "configs": {},
    }
    with tempfile.TemporaryDirectory(prefix="limner-gpu-") as scratch:
        for config in args.configs:
            path = Path(scratch) / config
            side, steps = build(config, path, dtype)
            if (args.scheduling or args.scheduling_only) and config in ("tiny", "sd-turbo"):
                compared = scheduling(path, Path(scratch) / f"{config}-scheduling", side, device.type, args)
                results.setdefault("scheduling", {})[config] = compared
            if args.scheduling_only:
                continue
            print(f"{config}: built at {path}; measuring the pipeline directly", flush=True)
            rows = direct(path, side, steps, device, dtype, args.repeats)
            server = serve(path, Path(scratch) / f"{config}-server", config, steps, device.type)
            try:
                print(f"{config}: measuring limner over HTTP", flush=True)
                http = over_http(server, config, side, args.repeats)
            finally:
                server.stop()
            for row in rows:
                row["http_images_per_s"] = http[row["batch"]]
                row["http_ratio"] = http[row["batch"]] / row["direct_images_per_s"]
                row["http_ratio_with_encode_store"] = http[row["batch"]] / row["direct_with_encode_store_images_per_s"]
            results["configs"][config] = rows
    args.out.mkdir(parents=True, exist_ok=True)
    if "scheduling" in results:
        text = scheduling_markdown(results)
        (args.out / "gpu_scheduling.json").write_text(json.dumps(results["scheduling"], indent=2) + "\n")
        (args.out / "gpu_scheduling.md").write_text(text)
        print(text)
    if args.scheduling_only:
        return
    (args.out / "gpu.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "gpu.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
