"""Prompt adherence of the built-in model, measured without a human.

For each caption, generate an image and rank every rendered training emoji by pixel distance to it;
a hit is the prompted emoji among the nearest 1 or 5. Reported for training captions (the Unicode
names) and for hand-written paraphrases, with seconds per image and a sample grid.

    python -m benchmarks.builtin_quality [--model-dir DIR] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from limner.builtin import BUILTIN_MODEL_DIR
from limner.builtin.emoji_data import load_emoji
from limner.builtin.pipeline import EmojiDiffusionPipeline

RESULTS = Path(__file__).resolve().parent / "results"

PARAPHRASES: list[tuple[str, str]] = [
    ("a happy smiling face", "grinning face"),
    ("a face crying with laughter", "face with tears of joy"),
    ("a heart that is red", "heavy black heart"),
    ("a blue love heart", "blue heart"),
    ("a green love heart", "green heart"),
    ("a purple heart shape", "purple heart"),
    ("a yellow heart", "yellow heart"),
    ("a cute puppy face", "dog face"),
    ("the face of a kitten", "cat face"),
    ("a pig's head", "pig face"),
    ("a monkey's face", "monkey face"),
    ("a panda bear", "panda face"),
    ("a shiny red apple", "red apple"),
    ("a sour green apple", "green apple"),
    ("a slice of pizza", "slice of pizza"),
    ("a juicy hamburger", "hamburger"),
    ("a ripe banana", "banana"),
    ("a bunch of grapes", "grapes"),
    ("a red strawberry", "strawberry"),
    ("a wedge of cheese", "cheese wedge"),
    ("the bright sun", "black sun with rays"),
    ("a rainbow in the sky", "rainbow"),
    ("a snowflake", "snowflake"),
    ("a cup of hot coffee", "hot beverage"),
    ("a space rocket", "rocket"),
    ("a red car", "automobile"),
    ("a city bus", "bus"),
    ("an airplane", "airplane"),
    ("a glowing star", "white medium star"),
    ("a tall pine tree", "evergreen tree"),
]
GRID_PROMPTS = [
    "red apple",
    "grinning face",
    "blue heart",
    "dog face",
    "slice of pizza",
    "rocket",
    "rainbow",
    "snowman",
    "banana",
    "cat face",
    "automobile",
    "sun with face",
]


@dataclass
class Retrieval:
    top1: float
    top5: float
    count: int


def features(images: list[Image.Image]) -> np.ndarray:
    """Lightly blurred 32x32 RGB pixels: tolerant of one-pixel shifts, still specific to the glyph."""
    rows = [
        np.asarray(image.convert("RGB").resize((32, 32)).filter(ImageFilter.GaussianBlur(1)), dtype=np.float32)
        for image in images
    ]
    return np.stack(rows).reshape(len(rows), -1) / 255.0


def retrieval(generated: np.ndarray, references: np.ndarray, targets: list[int]) -> Retrieval:
    distances = ((generated[:, None, :] - references[None, :, :]) ** 2).sum(-1)
    ranks = np.argsort(distances, axis=1)
    top1 = float(np.mean([ranks[i, 0] == t for i, t in enumerate(targets)]))
    top5 = float(np.mean([t in ranks[i, :5] for i, t in enumerate(targets)]))
    return Retrieval(top1, top5, len(targets))


def generate(
    pipe: EmojiDiffusionPipeline, prompts: list[str], seed: int, steps: int, batch: int = 32
) -> list[Image.Image]:
    images: list[Image.Image] = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start : start + batch]
        generators = [torch.Generator().manual_seed(seed + start + i) for i in range(len(chunk))]
        images.extend(pipe(chunk, generator=generators, num_inference_steps=steps).images)
    return images


def grid(images: list[Image.Image], captions: list[str], cell: int = 128, columns: int = 6) -> Image.Image:
    rows = -(-len(images) // columns)
    canvas = Image.new("RGB", (columns * cell, rows * (cell + 18)), "white")
    draw = ImageDraw.Draw(canvas)
    for index, (image, caption) in enumerate(zip(images, captions, strict=True)):
        x, y = (index % columns) * cell, (index // columns) * (cell + 18)
        canvas.paste(image.resize((cell, cell), Image.Resampling.LANCZOS), (x, y))
        draw.text((x + 4, y + cell + 2), caption[:22], fill=(0, 0, 0))
    return canvas


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, default=BUILTIN_MODEL_DIR)
    parser.add_argument("--limit", type=int, default=0, help="evaluate only the first N training captions")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    pipe = EmojiDiffusionPipeline.from_pretrained(args.model_dir)
    pipe.unet.to(torch.float32)
    samples = load_emoji(32)
    names = [sample.name for sample in samples]
    references = features([sample.image for sample in samples])
    chosen = samples[: args.limit] if args.limit else samples

    started = time.perf_counter()
    trained = generate(pipe, [s.name for s in chosen], args.seed, args.steps)
    batched_seconds = (time.perf_counter() - started) / len(chosen)
    train_score = retrieval(features(trained), references, [names.index(s.name) for s in chosen])

    known = [(prompt, target) for prompt, target in PARAPHRASES if target in names]
    para = generate(pipe, [prompt for prompt, _ in known], args.seed, args.steps)
    para_score = retrieval(features(para), references, [names.index(target) for _, target in known])

    single = []
    for prompt in GRID_PROMPTS[:5]:
        begin = time.perf_counter()
        pipe(prompt, generator=torch.Generator().manual_seed(1), num_inference_steps=args.steps)
        single.append(time.perf_counter() - begin)

    args.out.mkdir(parents=True, exist_ok=True)
    grid_images = generate(pipe, GRID_PROMPTS, 7, args.steps)
    grid(grid_images, GRID_PROMPTS).save(args.out / "builtin_grid.png")
    report = {
        "images": len(names),
        "train_top1": round(train_score.top1, 3),
        "train_top5": round(train_score.top5, 3),
        "train_count": train_score.count,
        "paraphrase_top1": round(para_score.top1, 3),
        "paraphrase_top5": round(para_score.top5, 3),
        "paraphrase_count": para_score.count,
        "chance_top5": round(5 / len(names), 3),
        "seconds_per_image_single": round(float(np.median(single)), 3),
        "seconds_per_image_batched": round(batched_seconds, 3),
        "steps": args.steps,
        "torch_threads": torch.get_num_threads(),
    }
    (args.out / "builtin_quality.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
