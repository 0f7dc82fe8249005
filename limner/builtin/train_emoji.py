"""Build the built-in model from scratch: ``make train`` (one thread, deterministic, resumable).

    python -m limner.builtin.train_emoji [--out DIR] [--checkpoint-dir DIR]

Renders every emoji the font draws (``emoji_set``), trains the caption encoder (``train_encoder``, minutes)
and the upsampler (``train_upsampler``, the long part), then writes the model directory: the encoder, the
upsampler, the 64x64 bases as one PNG atlas, the emoji list and a record of the run. Each part checkpoints
into ``--checkpoint-dir``; a rerun resumes where it stopped and gives the same files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from limner.builtin import BUILTIN_MODEL_DIR
from limner.builtin.emoji_set import EMOJIBASE_VERSION, EMOJILIB_VERSION, load_glyphs
from limner.builtin.glyph_pipeline import EmojiGlyphPipeline, GlyphBases
from limner.builtin.glyph_store import base_tiles, glyph_tensor
from limner.builtin.train_encoder import EncoderConfig
from limner.builtin.train_encoder import train as train_encoder
from limner.builtin.train_upsampler import TARGET, UpsamplerConfig
from limner.builtin.train_upsampler import train as train_upsampler

DEFAULT_CHECKPOINTS = Path.home() / ".cache" / "limner" / "train-emoji"


def export(pipe: EmojiGlyphPipeline, out: Path, record: dict[str, Any]) -> None:
    """Write the model directory next to ``out`` and swap it in, so a reader never sees half of one."""
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    pipe.save_pretrained(partial, training=record)
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)


def build(
    checkpoint_dir: Path,
    out: Path,
    encoder: EncoderConfig | None = None,
    upsampler: UpsamplerConfig | None = None,
) -> EmojiGlyphPipeline:
    encoder = encoder or EncoderConfig()
    upsampler = upsampler or UpsamplerConfig()
    started = time.monotonic()
    entries, images = load_glyphs()
    print(f"{len(entries)} emoji drawn by the font")
    captions = train_encoder(encoder, entries, checkpoint_dir).model
    upsampled = train_upsampler(upsampler, checkpoint_dir, glyph_tensor(TARGET, images)).model
    bases = GlyphBases(base_tiles(images))
    emoji = [{"emoji": e.emoji, "hexcode": e.hexcode, "label": e.label} for e in entries]
    pipe = EmojiGlyphPipeline(captions, upsampled, bases, emoji)
    record = {
        "emoji": len(entries),
        "emojibase_data": EMOJIBASE_VERSION,
        "emojilib": EMOJILIB_VERSION if any(entry.keywords for entry in entries) else None,
        "encoder": {"steps": encoder.steps, "batch_size": encoder.batch_size, "seed": encoder.seed},
        "upsampler": {"steps": upsampler.steps, "batch_size": upsampler.batch_size, "seed": upsampler.seed},
        "torch": torch.__version__,
        "this_run_seconds": round(time.monotonic() - started),
    }
    export(pipe, out, record)
    print(f"exported to {out}")
    return pipe


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=BUILTIN_MODEL_DIR)
    parser.add_argument("--checkpoint-dir", type=Path, default=DEFAULT_CHECKPOINTS)
    parser.add_argument("--encoder-steps", type=int, default=EncoderConfig.steps)
    parser.add_argument("--upsampler-steps", type=int, default=UpsamplerConfig.steps)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    build(
        args.checkpoint_dir,
        args.out,
        EncoderConfig(steps=args.encoder_steps),
        UpsamplerConfig(steps=args.upsampler_steps),
    )
    print(json.dumps({"out": str(args.out)}))


if __name__ == "__main__":
    main()
