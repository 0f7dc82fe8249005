"""The baseline: a plain diffusers FastAPI server, written the naive way, on limner's own pipeline.

This is the server most people write first, and what diffusers' example (``examples/server/server.py``)
shows: one pipeline loaded into a module global at startup, and an ``async def`` endpoint that runs
it in a thread and returns the image as base64 PNG. The example calls the shared pipeline from
several threads at once; pipelines are not thread-safe (the scheduler keeps per-call state), so the
first fix everyone makes is the one here, a single global lock around the pipeline, which is also
what AUTOMATIC1111's web UI does. Every request then waits its turn and runs alone: nothing is
batched, nothing is bounded, and a request whose client left still runs to the end.

It speaks just enough of OpenAI's ``POST /v1/images/generations`` (with limner's ``seed`` and
``steps`` extensions) for the benchmark's client to send both servers the same body, and uses the
same pipeline class, weights, device and dtype choice as limner, one generator per image seeded the
same way, so the two return the same pixels for the same request.

    python -m benchmarks.naive_server --port 8001
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import time
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI
from PIL import Image
from pydantic import BaseModel

from limner.builtin import BUILTIN_MODEL_DIR
from limner.builtin.pipeline import EmojiDiffusionPipeline

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
pipeline = EmojiDiffusionPipeline.from_pretrained(
    BUILTIN_MODEL_DIR, torch_dtype=torch.float16 if device.type == "cuda" else torch.float32
).to(device)
pipeline.set_progress_bar_config(disable=True)
lock = asyncio.Lock()
app = FastAPI()


class GenerationRequest(BaseModel):
    prompt: str
    model: str | None = None
    n: int = 1
    size: str = "1024x1024"
    response_format: str = "b64_json"
    seed: int | None = None
    steps: int = 20
    guidance_scale: float = 4.0


@app.get("/health")
async def health() -> dict[str, bool]:
    return {"ok": True}


@app.post("/v1/images/generations")
async def generate(request: GenerationRequest) -> dict[str, Any]:
    seed = request.seed if request.seed is not None else int(time.time())
    generators = [torch.Generator(device=device).manual_seed(seed + index) for index in range(request.n)]
    async with lock:
        output = await asyncio.to_thread(
            pipeline,
            request.prompt,
            num_images_per_prompt=request.n,
            num_inference_steps=request.steps,
            guidance_scale=request.guidance_scale,
            generator=generators,
        )
    width, height = (int(side) for side in request.size.lower().split("x"))
    data = []
    for image in output.images:
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data.append({"b64_json": base64.b64encode(buffer.getvalue()).decode()})
    return {"created": int(time.time()), "data": data}


def main() -> None:
    parser = argparse.ArgumentParser(description="A naive diffusers server, the benchmark's baseline.")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
