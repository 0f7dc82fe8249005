"""Train the caption encoder from scratch (one thread, deterministic, a few minutes).

    python -m limner.builtin.train_encoder [--steps N] [--checkpoint-dir DIR]

Each step draws one caption for each of a batch of emoji (``limner.builtin.captions``) and trains a softmax
over every emoji. The state is checkpointed atomically, so a rerun resumes to the same weights.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from limner.builtin import checkpoints
from limner.builtin.caption_encoder import CaptionEncoder
from limner.builtin.captions import draw_caption, name_of
from limner.builtin.emoji_set import EmojiEntry


@dataclass
class EncoderConfig:
    steps: int = 4000
    batch_size: int = 256
    learning_rate: float = 1e-2
    final_learning_rate: float = 2e-4
    label_smoothing: float = 0.05
    seed: int = 30
    checkpoint_every: int = 500
    log_every: int = 100


class EncoderTrainer:
    def __init__(self, config: EncoderConfig, entries: list[EmojiEntry], checkpoint_dir: Path) -> None:
        self.config = config
        self.entries = entries
        self.checkpoint_dir = checkpoint_dir
        torch.manual_seed(config.seed)
        self.model = CaptionEncoder(len(entries))
        table = [self.model.table.weight]
        rest = [p for name, p in self.model.named_parameters() if name != "table.weight"]
        self.optimizers = [
            torch.optim.SparseAdam(table, lr=config.learning_rate),  # only the rows a batch touched
            torch.optim.Adam(rest, lr=config.learning_rate),
        ]
        self.rng = random.Random(config.seed)
        self.step = 0

    def lr_at(self, step: int) -> float:
        c = self.config
        cosine = 0.5 * (1 + np.cos(np.pi * min(1.0, step / max(1, c.steps))))
        return float(c.final_learning_rate + (c.learning_rate - c.final_learning_rate) * cosine)

    def train_step(self) -> float:
        targets = [self.rng.randrange(len(self.entries)) for _ in range(self.config.batch_size)]
        captions = [draw_caption(self.entries[index], self.rng) for index in targets]
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = self.lr_at(self.step)
        logits = self.model.logits(captions)
        loss = F.cross_entropy(logits, torch.tensor(targets), label_smoothing=self.config.label_smoothing)
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for optimizer in self.optimizers:
            optimizer.step()
        self.step += 1
        return float(loss.detach())

    def name_accuracy(self) -> tuple[float, float]:
        """(top-1, top-5) of each emoji's own name among all: a training-set check, not the evaluation."""
        self.model.eval()
        scores = self.model.scores([name_of(entry) for entry in self.entries])
        self.model.train()
        top5 = scores.topk(5, dim=1).indices
        truth = torch.arange(len(self.entries))[:, None]
        return float((top5[:, :1] == truth).any(1).float().mean()), float((top5 == truth).any(1).float().mean())

    def state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizers": [optimizer.state_dict() for optimizer in self.optimizers],
            "rng": self.rng.getstate(),
            "torch_rng": torch.get_rng_state(),
            "config": asdict(self.config),
        }

    def save_checkpoint(self) -> None:
        checkpoints.save(self.state(), self.checkpoint_dir / "encoder.pt")

    def load_checkpoint(self) -> bool:
        state = checkpoints.load(self.checkpoint_dir / "encoder.pt")
        if state is None:
            return False
        self.model.load_state_dict(state["model"])
        for optimizer, saved in zip(self.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)
        self.rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        return True


def train(
    config: EncoderConfig, entries: list[EmojiEntry], checkpoint_dir: Path, until: int | None = None
) -> EncoderTrainer:
    """Run (or resume) to ``config.steps`` (or stop at ``until``, as an interrupted run would)."""
    trainer = EncoderTrainer(config, entries, checkpoint_dir)
    resumed = trainer.load_checkpoint()
    print(f"encoder: {len(entries)} emoji, {'resumed at' if resumed else 'from'} step {trainer.step}")
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    losses: list[float] = []
    started = time.monotonic()
    with (checkpoint_dir / "encoder-loss.jsonl").open("a") as log:
        while trainer.step < min(config.steps, until or config.steps):
            losses.append(trainer.train_step())
            if trainer.step % config.log_every == 0:
                record: dict[str, Any] = {
                    "step": trainer.step,
                    "loss": round(sum(losses) / len(losses), 4),
                    "elapsed_s": round(time.monotonic() - started, 1),
                }
                if trainer.step % config.checkpoint_every == 0:
                    record["names_top1"], record["names_top5"] = trainer.name_accuracy()
                log.write(json.dumps(record) + "\n")
                log.flush()
                losses.clear()
            if trainer.step % config.checkpoint_every == 0:
                trainer.save_checkpoint()
    trainer.save_checkpoint()
    return trainer


def main(argv: list[str] | None = None) -> None:
    from limner.builtin.emoji_set import load_glyphs

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=EncoderConfig.steps)
    parser.add_argument("--checkpoint-dir", type=Path, default=Path.home() / ".cache" / "limner" / "train-emoji")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    entries, _ = load_glyphs()
    train(EncoderConfig(steps=args.steps), entries, args.checkpoint_dir)


if __name__ == "__main__":
    main()
