"""PNG compression options measured on what limner delivers, to choose ``limner.media.encode.PNG_SAVE_OPTIONS``.

Two kinds of 1024x1024 RGB image: the built-in model's 32x32 outputs upscaled the way the server does it
(``fit_to_size``: Lanczos), and photographic-like images (smooth noise at several scales, gradients and a
fine grain, made with numpy: what a diffusion model at its native 1024x1024 delivers, roughly). Each is
encoded with zlib levels 0-9 at the default strategy and with the other strategies Pillow passes on
(``compress_type``: filtered, run-length, Huffman only, fixed codes), in this process, one at a time.

Criterion: the least encode time plus transfer time of the answer at ``LINK_MBIT`` (the base64 JSON
answer, 4/3 of the PNG), summed over both kinds. The break-even column says below which link speed
level 6 (zlib's default, limner's choice before this measurement) would be quicker than an option.

    python -m benchmarks.png_levels        # or: python -m benchmarks --only png
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import time
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import PIL
from PIL import Image, features

from limner.core.sizes import fit_to_size
from limner.media.encode import PNG_SAVE_OPTIONS

RESULTS = Path(__file__).resolve().parent / "results"
SIZE = 1024
LINK_MBIT = 100.0
"""A LAN or a cloud region's egress: slower links weigh bytes more (see the break-even column)."""
BASE64 = 4 / 3
EMOJI_PROMPTS = ("a smiling cat face", "a red heart", "a space rocket", "a slice of pizza")
STRATEGIES = {
    "default": zlib.Z_DEFAULT_STRATEGY,
    "filtered": zlib.Z_FILTERED,
    "rle": zlib.Z_RLE,
    "huffman": zlib.Z_HUFFMAN_ONLY,
    "fixed": zlib.Z_FIXED,
}
OPTIONS: tuple[tuple[str, int], ...] = (
    *(("default", level) for level in range(10)),
    *(("filtered", level) for level in (1, 4, 6, 9)),
    ("rle", 1),
    ("huffman", 1),
    *(("fixed", level) for level in (1, 6)),
)
"""Run-length and Huffman-only compression make the same bytes at every level from 1 to 9 (checked below)."""


@dataclass(frozen=True)
class Measured:
    strategy: str
    level: int
    kind: str
    ms: float
    bytes: int


def emoji_images(steps: int = 20) -> list[Image.Image]:
    """The built-in model's images for a few prompts (fixed seeds), upscaled as the server does."""
    import torch

    from limner.builtin import BUILTIN_MODEL_DIR
    from limner.builtin.pipeline import EmojiDiffusionPipeline

    pipe = EmojiDiffusionPipeline.from_pretrained(BUILTIN_MODEL_DIR)
    images = []
    for seed, prompt in enumerate(EMOJI_PROMPTS):
        generator = torch.Generator().manual_seed(seed)
        small = pipe(prompt, num_inference_steps=steps, generator=generator).images[0]
        images.append(fit_to_size(small, SIZE, SIZE))
    return images


def photo_image(seed: int) -> Image.Image:
    """Smooth noise at four scales, two gradients and a grain of sigma 3: no flat areas, like a photograph."""
    rng = np.random.default_rng(seed)
    pixels = np.zeros((SIZE, SIZE, 3), np.float32)
    for cells, amplitude in ((4, 90), (16, 45), (64, 20), (256, 8)):
        field = rng.normal(0.0, 1.0, (cells, cells, 3))
        low = Image.fromarray((field * 40 + 128).clip(0, 255).astype(np.uint8))
        smooth = np.asarray(low.resize((SIZE, SIZE), Image.Resampling.BICUBIC), np.float32)
        pixels += (smooth - 128) * amplitude / 40
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    pixels += np.stack([x * 60, y * 60, (1 - x) * 40], axis=-1)
    pixels += rng.normal(0.0, 3.0, pixels.shape)
    return Image.fromarray((pixels + 110).clip(0, 255).astype(np.uint8))


def encode(image: Image.Image, strategy: str, level: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=level, compress_type=STRATEGIES[strategy])
    return buffer.getvalue()


def measure(kinds: dict[str, list[Image.Image]], repeats: int) -> list[Measured]:
    """Median encode time per image and mean size, per option and kind; options interleave in each round
    so drift in the machine's speed hits them alike."""
    times: dict[tuple[str, int, str], list[float]] = {}
    sizes: dict[tuple[str, int, str], list[int]] = {}
    for _ in range(repeats):
        for strategy, level in OPTIONS:
            for kind, images in kinds.items():
                for image in images:
                    started = time.perf_counter()
                    data = encode(image, strategy, level)
                    times.setdefault((strategy, level, kind), []).append(time.perf_counter() - started)
                    sizes.setdefault((strategy, level, kind), []).append(len(data))
    return [
        Measured(*key, ms=statistics.median(times[key]) * 1000, bytes=round(statistics.mean(sizes[key])))
        for key in times
    ]


def cost_ms(ms: float, size: int, link_mbit: float = LINK_MBIT) -> float:
    """Encode time plus sending the base64 answer at ``link_mbit``."""
    return ms + size * BASE64 * 8 / (link_mbit * 1e6) * 1000


def level6_quicker(option: dict[str, float], baseline: dict[str, float]) -> str:
    """On which links ``baseline`` (level 6) answers sooner than ``option``: "below 4 Mbit/s" for an option
    that is faster but bigger, "above ..." for one smaller but slower, else "never" or "always"."""
    slower_s = (option["ms"] - baseline["ms"]) / 1000
    extra_bits = (option["bytes"] - baseline["bytes"]) * BASE64 * 8
    if slower_s == 0 and extra_bits == 0:
        return "-"
    if slower_s < 0 and extra_bits > 0:
        return f"below {extra_bits / -slower_s / 1e6:.1f} Mbit/s"
    if slower_s > 0 and extra_bits < 0:
        return f"above {-extra_bits / slower_s / 1e6:.1f} Mbit/s"
    return "never" if slower_s <= 0 else "always"


def summarise(measured: list[Measured]) -> list[dict[str, Any]]:
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for m in measured:
        row = rows.setdefault((m.strategy, m.level), {"strategy": m.strategy, "level": m.level})
        row[m.kind] = {"ms": round(m.ms, 2), "bytes": m.bytes, "cost_ms": round(cost_ms(m.ms, m.bytes), 2)}
    baseline = rows[("default", 6)]
    for row in rows.values():
        row["cost_ms"] = round(sum(row[kind]["cost_ms"] for kind in ("emoji", "photo")), 2)
        for kind in ("emoji", "photo"):
            row[kind]["level6_quicker"] = level6_quicker(row[kind], baseline[kind])
    return list(rows.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.png_levels", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="rounds over every option (medians)")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps of the built-in model's images")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    kinds = {"emoji": emoji_images(args.steps), "photo": [photo_image(seed) for seed in (1, 2)]}
    for images in kinds.values():  # the options left out above make the same bytes as level 1
        for strategy in ("rle", "huffman"):
            assert encode(images[0], strategy, 9) == encode(images[0], strategy, 1), strategy
    rows = summarise(measure(kinds, args.repeats))
    best = min(rows, key=lambda row: row["cost_ms"])
    current = {
        "strategy": _strategy_name(PNG_SAVE_OPTIONS["compress_type"]),
        "level": PNG_SAVE_OPTIONS["compress_level"],
    }
    chosen = next(row for row in rows if (row["strategy"], row["level"]) == (current["strategy"], current["level"]))
    check = kinds["photo"][0]
    lossless = Image.open(io.BytesIO(encode(check, best["strategy"], best["level"]))).tobytes() == check.tobytes()
    result = {
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "images": {kind: len(images) for kind, images in kinds.items()},
        "size": f"{SIZE}x{SIZE}",
        "repeats": args.repeats,
        "link_mbit": LINK_MBIT,
        "pillow": PIL.__version__,
        "zlib": f"{features.version('zlib')}{' (zlib-ng)' if features.check_feature('zlib_ng') else ''}",
        "python": platform.python_version(),
        "cpu": _cpu(),
        "rows": rows,
        "best": {"strategy": best["strategy"], "level": best["level"]},
        "current": current,
        "current_is_best": best is chosen,
        "lossless": lossless,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "png_levels.json").write_text(json.dumps(result, indent=2) + "\n")
    print("\n".join(table(result)))
    print(f"wrote {args.out / 'png_levels.json'}")
    return 0


def _strategy_name(value: int) -> str:
    return next(name for name, number in STRATEGIES.items() if number == value)


def _cpu() -> str:
    from benchmarks.harness import cpu_model

    return cpu_model()


def table(data: dict[str, Any]) -> list[str]:
    """The measurement as a markdown table (also folded into ``REPORT.md``)."""
    link = data["link_mbit"]
    lines = [
        f"| strategy | level | emoji ms | emoji KiB | photo ms | photo KiB | encode + send at {link:g} Mbit/s, "
        "both kinds, ms | where level 6 answers sooner (emoji / photo) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    current = (data["current"]["strategy"], data["current"]["level"])
    for row in data["rows"]:
        emoji, photo = row["emoji"], row["photo"]
        mark = " **(chosen)**" if (row["strategy"], row["level"]) == current else ""
        lines.append(
            f"| {row['strategy']}{mark} | {row['level']} | {emoji['ms']:.1f} | {emoji['bytes'] / 1024:.0f} "
            f"| {photo['ms']:.1f} | {photo['bytes'] / 1024:.0f} | {row['cost_ms']:.1f} "
            f"| {emoji['level6_quicker']} / {photo['level6_quicker']} |"
        )
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
