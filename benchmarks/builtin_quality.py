"""The built-in model, measured without a human: retrieval, sharpness, variety, speed and size.

    python -m benchmarks.builtin_quality [--model-dir DIR] [--out DIR]

- **Retrieval**: the emoji the model draws for a prompt is the one its caption encoder ranks first, so
  top-1 is what a user sees and top-5 says how near a miss was. Among all the model's emoji, for two sets
  that training never saw: every emoji's CLDR name in held-out phrasings (``HELD_OUT_TEMPLATES``), and
  hand-written paraphrases (``PARAPHRASES``; any that reduces to a training caption is left out and counted).
- **Sharpness** at 1024x1024: the width in pixels of the emoji's outline (where alpha goes from 10% to
  90%, divided by the outline's length) and the 99th percentile of the colour gradient, for the model's
  own image against the same emoji bicubic-upscaled from 32x32 (the first generation's resolution) and
  from its 64x64 base (what the learned upsampler adds), all placed alike.
- **Variety**: mean absolute RGBA difference between images of the same prompt under different seeds.
- **Speed and size**: load time, one 1024x1024 image (median of 5), the model directory's bytes.
It writes ``builtin_quality.json`` and the README's grid ``builtin_grid.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from benchmarks.builtin_prompts import GRID_PROMPTS, HELD_OUT_TEMPLATES, PARAPHRASES
from limner.builtin import BUILTIN_MODEL_DIR
from limner.builtin.caption_encoder import words
from limner.builtin.glyph_pipeline import EmojiGlyphPipeline, _target_box, _transformed
from limner.builtin.upsampler import downsample
from limner.builtin.variety import Variation

RESULTS = Path(__file__).resolve().parent / "results"
SHARPNESS_PROMPTS = GRID_PROMPTS


def topk(pipe: EmojiGlyphPipeline, prompts: list[str], targets: list[int], batch: int = 512) -> tuple[float, float]:
    """(top-1, top-5) of ``targets`` among every emoji for ``prompts``."""
    hits1 = hits5 = 0
    for start in range(0, len(prompts), batch):
        scores = pipe.captions.scores(prompts[start : start + batch])
        best = scores.topk(5, dim=1).indices
        truth = torch.tensor(targets[start : start + batch])[:, None]
        hits1 += int((best[:, :1] == truth).any(1).sum())
        hits5 += int((best == truth).any(1).sum())
    return hits1 / len(prompts), hits5 / len(prompts)


def training_word_sets(pipe: EmojiGlyphPipeline) -> set[frozenset[str]]:
    """Word sets of every caption text training starts from, when the emoji data is installed (else empty)."""
    try:
        from limner.builtin.captions import all_captions
        from limner.builtin.emoji_set import load_entries

        return {frozenset(words(text)) for entry in load_entries() for text in all_captions(entry)}
    except FileNotFoundError:
        return set()


def retrieval(pipe: EmojiGlyphPipeline) -> dict[str, Any]:
    labels = {item["label"]: index for index, item in enumerate(pipe.emoji)}
    report: dict[str, Any] = {"emoji": len(labels), "chance_top5": round(5 / len(labels), 4)}
    names = [item["label"].replace(":", "") for item in pipe.emoji]
    per_template = {}
    all_prompts: list[str] = []
    all_targets: list[int] = []
    for template in HELD_OUT_TEMPLATES:
        prompts = [template.format(name) for name in names]
        per_template[template] = [round(v, 4) for v in topk(pipe, prompts, list(range(len(names))))]
        all_prompts += prompts
        all_targets += list(range(len(names)))
    top1, top5 = topk(pipe, all_prompts, all_targets)
    report["held_out_names"] = {"count": len(all_prompts), "top1": round(top1, 4), "top5": round(top5, 4)}
    report["held_out_names_by_template"] = per_template

    seen = training_word_sets(pipe)
    kept = [(p, t) for p, t in PARAPHRASES if t in labels and frozenset(words(p)) not in seen]
    top1, top5 = topk(pipe, [p for p, _ in kept], [labels[t] for _, t in kept])
    misses = [{"prompt": p, "wanted": t, "got": pipe.ranked(p, 3)} for p, t in kept if t not in pipe.ranked(p, 5)]
    report["paraphrases"] = {
        "count": len(kept),
        "left_out_as_training_captions": len(PARAPHRASES) - len(kept),
        "checked_against_training_captions": bool(seen),
        "top1": round(top1, 4),
        "top5": round(top5, 4),
        "misses_top5": misses,
    }
    report["issue_examples"] = {p: pipe.ranked(p, 3) for p in GRID_PROMPTS[:5]}
    return report


def edge_width(alpha: np.ndarray) -> float:
    """Mean outline width in pixels: pixels with alpha in (0.1, 0.9) per pixel of outline length."""
    partial = float(((alpha > 0.1) & (alpha < 0.9)).sum())
    inside = alpha >= 0.5
    length = float((inside[1:, :] != inside[:-1, :]).sum() + (inside[:, 1:] != inside[:, :-1]).sum())
    return partial / max(length, 1.0)


def gradient_p99(image: Image.Image) -> float:
    """99th percentile of the luminance gradient, on white (higher: crisper edges)."""
    flat = Image.new("RGB", image.size, "white")
    flat.paste(image, mask=image.getchannel("A"))
    grey = np.asarray(flat.convert("L"), dtype=np.float32)
    gx, gy = np.abs(np.diff(grey, axis=1))[:-1], np.abs(np.diff(grey, axis=0))[:, :-1]
    return float(np.percentile(np.hypot(gx, gy), 99))


def sharpness(pipe: EmojiGlyphPipeline, side: int = 1024) -> dict[str, Any]:
    canvas = (side, side)
    box = _target_box(canvas, None, Variation())
    rows: dict[str, list[tuple[float, float]]] = {"model": [], "bicubic_from_32": [], "bicubic_from_64": []}
    for prompt in SHARPNESS_PROMPTS:
        [index] = pipe.choose([prompt])
        base = pipe.bases.base(index)[None]
        candidates = {
            "model": pipe(prompt, width=side, height=side, generator=None).images[0],
            "bicubic_from_32": _transformed(downsample(base, 32)[0], canvas, box, 0.0).convert("RGBA"),
            "bicubic_from_64": _transformed(base[0], canvas, box, 0.0).convert("RGBA"),
        }
        for name, image in candidates.items():
            assert image is not None
            alpha = np.asarray(image.getchannel("A"), dtype=np.float32) / 255.0
            rows[name].append((edge_width(alpha), gradient_p99(image)))
    return {
        name: {
            "edge_width_px": round(statistics.mean(r[0] for r in values), 2),
            "gradient_p99": round(statistics.mean(r[1] for r in values), 1),
        }
        for name, values in rows.items()
    } | {"images": len(SHARPNESS_PROMPTS), "side": side}


def variety(pipe: EmojiGlyphPipeline, seeds: int = 4, side: int = 256) -> dict[str, Any]:
    differences = []
    for prompt in GRID_PROMPTS:
        generators = [torch.Generator().manual_seed(seed) for seed in range(seeds)]
        images = pipe(prompt, num_images_per_prompt=seeds, width=side, height=side, generator=generators).images
        arrays = [np.asarray(image, dtype=np.float32) for image in images if image is not None]
        differences += [float(np.abs(a - b).mean()) for a, b in itertools.combinations(arrays, 2)]
    return {"mean_abs_rgba_difference": round(statistics.mean(differences), 1), "seeds": seeds, "side": side}


def speed(model_dir: Path) -> dict[str, Any]:
    """Wall seconds, and CPU seconds on one thread: on a busy machine the CPU time is what an idle one takes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    started, cpu = time.perf_counter(), time.process_time()
    pipe = EmojiGlyphPipeline.from_pretrained(model_dir)
    load = (time.perf_counter() - started, time.process_time() - cpu)
    pipe("warm up", width=256, height=256)
    times = []
    for seed in range(5):
        begin, cpu = time.perf_counter(), time.process_time()
        pipe("a slice of pizza", width=1024, height=1024, generator=[torch.Generator().manual_seed(seed)])
        times.append((time.perf_counter() - begin, time.process_time() - cpu))
    torch.set_num_threads(threads)
    size = sum(path.stat().st_size for path in model_dir.iterdir() if path.is_file())
    return {
        "load_seconds": round(load[0], 3),
        "load_cpu_seconds": round(load[1], 3),
        "seconds_per_1024_image": round(statistics.median(t[0] for t in times), 3),
        "cpu_seconds_per_1024_image": round(statistics.median(t[1] for t in times), 3),
        "torch_threads": 1,
        "load_average": [round(v, 1) for v in os.getloadavg()],
        "cpus": os.cpu_count(),
        "model_megabytes": round(size / 1e6, 1),
    }


def grid(pipe: EmojiGlyphPipeline, cell: int = 160, seeds: int = 3) -> Image.Image:
    """GRID_PROMPTS down, seeds across (on a light checkerboard: the transparency shows)."""
    columns = 2 * seeds
    rows = -(-len(GRID_PROMPTS) // 2)
    canvas = Image.new("RGB", (columns * cell, rows * (cell + 18)), "white")
    draw = ImageDraw.Draw(canvas)
    checker = Image.new("RGB", (cell, cell), (236, 236, 236))
    for y in range(0, cell, 16):
        for x in range((y // 16) % 2 * 16, cell, 32):
            checker.paste((250, 250, 250), (x, y, x + 16, y + 16))
    for index, prompt in enumerate(GRID_PROMPTS):
        generators = [torch.Generator().manual_seed(seed) for seed in range(seeds)]
        images = pipe(prompt, num_images_per_prompt=seeds, width=cell, height=cell, generator=generators).images
        row, half = divmod(index, 2)
        y = row * (cell + 18)
        for seed, image in enumerate(images):
            assert image is not None
            x = (half * seeds + seed) * cell
            canvas.paste(checker, (x, y))
            canvas.paste(image, (x, y), image)
        draw.text((half * seeds * cell + 4, y + cell + 2), f"{prompt} (seeds 0-{seeds - 1})", fill=(0, 0, 0))
    return canvas


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=BUILTIN_MODEL_DIR)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    timing = speed(args.model_dir)
    pipe = EmojiGlyphPipeline.from_pretrained(args.model_dir)
    report = {
        "retrieval": retrieval(pipe),
        "sharpness_1024": sharpness(pipe),
        "variety": variety(pipe),
        "speed_and_size": timing,
        "training": pipe.record,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    grid(pipe).save(args.out / "builtin_grid.png", optimize=True)
    (args.out / "builtin_quality.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "retrieval"}, indent=2))
    summary = {k: report["retrieval"][k] for k in ("held_out_names", "issue_examples")}
    print(
        json.dumps(
            summary
            | {"paraphrases": {k: v for k, v in report["retrieval"]["paraphrases"].items() if k != "misses_top5"}},
            indent=2,
        )
    )
    return report


if __name__ == "__main__":
    main()
