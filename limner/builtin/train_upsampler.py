"""Train the built-in model's upsampler from scratch on the emoji glyphs (one thread, deterministic, resumable).

    python -m limner.builtin.train_upsampler [--steps N] [--checkpoint-dir DIR] [--out DIR]

Each step takes a batch of glyphs at 128x128 (premultiplied RGBA), shifts them by a random sub-pixel phase
(whole pixels at 128, quarters at 32), flips, turns and permutes their colours, reduces them to 32x32 and
teaches the network to give back the 128x128 original, on random 16x16 windows (64x64 at the output). The
whole state (weights, optimizer, random generators) is checkpointed atomically every ``--checkpoint-every``
steps; a rerun with the same directory resumes there and ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from limner.builtin import checkpoints
from limner.builtin.glyph_store import glyph_tensor
from limner.builtin.upsampler import FACTOR, Upsampler, downsample

TARGET = 128
"""Glyph side the upsampler learns to produce (the font draws at 136)."""
WINDOW = 16
"""Input window side per sample (its target is ``WINDOW * FACTOR``)."""


@dataclass
class UpsamplerConfig:
    steps: int = 10000
    batch_size: int = 32
    learning_rate: float = 2e-3
    final_learning_rate: float = 5e-5
    warmup_steps: int = 100
    width: int = 32
    depth: int = 3
    seed: int = 30
    checkpoint_every: int = 200
    log_every: int = 50


class UpsamplerTrainer:
    """One run; ``state()`` is everything needed to continue it bit for bit."""

    def __init__(self, config: UpsamplerConfig, glyphs: torch.Tensor, checkpoint_dir: Path) -> None:
        self.config = config
        self.glyphs = glyphs  # [N, 4, TARGET, TARGET] uint8, premultiplied
        self.checkpoint_dir = checkpoint_dir
        torch.manual_seed(config.seed)
        self.model = Upsampler(config.width, config.depth)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then cosine decay to ``final_learning_rate``."""
        c = self.config
        if step < c.warmup_steps:
            return c.learning_rate * (step + 1) / c.warmup_steps
        progress = (step - c.warmup_steps) / max(1, c.steps - c.warmup_steps)
        cosine = 0.5 * (1 + np.cos(np.pi * min(1.0, progress)))
        return float(c.final_learning_rate + (c.learning_rate - c.final_learning_rate) * cosine)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(input windows [B, 4, WINDOW, WINDOW], target windows [B, 4, WINDOW*FACTOR, WINDOW*FACTOR])."""
        g, b = self.generator, self.config.batch_size
        index = torch.randint(0, self.glyphs.shape[0], (b,), generator=g)
        target = self.glyphs[index].float() / 255.0
        shift = torch.randint(-(FACTOR - 1), FACTOR, (2,), generator=g).tolist()
        target = torch.roll(target, shifts=(shift[0], shift[1]), dims=(2, 3))
        turns = int(torch.randint(0, 4, (1,), generator=g))
        target = torch.rot90(target, turns, dims=(2, 3))
        if bool(torch.randint(0, 2, (1,), generator=g)):
            target = target.flip(3)
        order = torch.randperm(3, generator=g)
        target = torch.cat([target[:, order], target[:, 3:]], dim=1)
        small = downsample(target, TARGET // FACTOR)
        small = (small * 255).round() / 255  # the shipped bases are 8-bit
        side = TARGET // FACTOR - WINDOW
        inputs, targets = [], []
        for row in range(b):
            # Windows that show some of the glyph: an empty window teaches nothing.
            for _ in range(4):
                y, x = (int(v) for v in torch.randint(0, side + 1, (2,), generator=g))
                window = small[row, :, y : y + WINDOW, x : x + WINDOW]
                if window[3].max() > 0.05:
                    break
            inputs.append(window)
            big = WINDOW * FACTOR
            targets.append(target[row, :, y * FACTOR : y * FACTOR + big, x * FACTOR : x * FACTOR + big])
        return torch.stack(inputs), torch.stack(targets)

    def train_step(self) -> float:
        inputs, targets = self.batch()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step)
        loss = F.l1_loss(self.model(inputs), targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return float(loss.detach())

    def state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "config": asdict(self.config),
        }

    def save_checkpoint(self) -> None:
        checkpoints.save(self.state(), self.checkpoint_dir / "upsampler.pt")

    def load_checkpoint(self) -> bool:
        state = checkpoints.load(self.checkpoint_dir / "upsampler.pt")
        if state is None:
            return False
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        return True


def train(
    config: UpsamplerConfig, checkpoint_dir: Path, glyphs: torch.Tensor | None = None, until: int | None = None
) -> UpsamplerTrainer:
    """Run (or resume) to ``config.steps`` (or stop at ``until``, as an interrupted run would); the loss goes to
    ``upsampler-loss.jsonl`` in the checkpoint directory."""
    glyphs = glyphs if glyphs is not None else glyph_tensor(TARGET)
    trainer = UpsamplerTrainer(config, glyphs, checkpoint_dir)
    resumed = trainer.load_checkpoint()
    params = sum(p.numel() for p in trainer.model.parameters())
    origin = "resumed at" if resumed else "from"
    print(f"upsampler: {glyphs.shape[0]} glyphs, {params} parameters, {origin} step {trainer.step}")
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    losses: list[float] = []
    started = time.monotonic()
    with (checkpoint_dir / "upsampler-loss.jsonl").open("a") as log:
        while trainer.step < min(config.steps, until or config.steps):
            losses.append(trainer.train_step())
            if trainer.step % config.log_every == 0:
                record = {
                    "step": trainer.step,
                    "loss": round(sum(losses) / len(losses), 5),
                    "lr": round(trainer.lr_at(trainer.step), 6),
                    "elapsed_s": round(time.monotonic() - started, 1),
                }
                log.write(json.dumps(record) + "\n")
                log.flush()
                losses.clear()
            if trainer.step % config.checkpoint_every == 0:
                trainer.save_checkpoint()
    trainer.save_checkpoint()
    return trainer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=UpsamplerConfig.steps)
    parser.add_argument("--checkpoint-dir", type=Path, default=Path.home() / ".cache" / "limner" / "train-emoji")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    train(UpsamplerConfig(steps=args.steps), args.checkpoint_dir)


if __name__ == "__main__":
    main()
