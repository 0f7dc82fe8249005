"""Train the first-generation emoji diffusion model from scratch, resumably (the built-in model is ``train_emoji``).

    python -m limner.builtin.train --steps 8000

Checkpoints (weights, EMA, optimizer, RNG state) go to ``--checkpoint-dir`` every ``--checkpoint-every``
steps, written atomically; a rerun with the same directory resumes where the last one stopped. The EMA
weights are exported to ``--out`` in diffusers format (fp16 safetensors) every ``--export-every`` steps
and at the end. Loss is logged as JSON lines in the checkpoint directory.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, UNet2DConditionModel
from tqdm import tqdm

from limner.builtin.emoji_data import load_emoji
from limner.builtin.pipeline import NATIVE_SIZE, UNSHUFFLE, EmojiDiffusionPipeline, images_to_tensor
from limner.builtin.text_encoder import EMBEDDING_DIM, SentenceEncoder

TRAIN_TIMESTEPS = 1000
BETA_SCHEDULE = "squaredcos_cap_v2"


@dataclass
class TrainConfig:
    steps: int = 8000
    batch_size: int = 32
    learning_rate: float = 3e-4
    warmup_steps: int = 200
    ema_decay: float = 0.999
    cfg_dropout: float = 0.1
    min_snr_gamma: float = 5.0
    loss_weighting: str = "min-snr"
    """``min-snr``: min-SNR-gamma weighting, fast to good pixels but it all but ignores the noisiest
    timesteps, where the prompt decides which emoji appears; ``uniform``: every timestep counts alike,
    which teaches that decision (the shipped model used min-snr first, then uniform; see training.json)."""
    width: int = 48
    seed: int = 1234
    checkpoint_every: int = 250
    export_every: int = 1000
    log_every: int = 25


def build_unet(width: int = 64) -> UNet2DConditionModel:
    """The built-in UNet: 16x16x12 in/out, conditioned through the time embedding, self-attention at 4x4."""
    channels = 3 * UNSHUFFLE * UNSHUFFLE
    return UNet2DConditionModel(
        sample_size=NATIVE_SIZE // UNSHUFFLE,
        in_channels=channels,
        out_channels=channels,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2D",
        block_out_channels=(width, width * 2, width * 4),
        layers_per_block=2,
        attention_head_dim=32,
        norm_num_groups=16,
        cross_attention_dim=EMBEDDING_DIM,
        class_embed_type="projection",
        projection_class_embeddings_input_dim=EMBEDDING_DIM,
        resnet_time_scale_shift="scale_shift",
    )


def training_scheduler() -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=TRAIN_TIMESTEPS, beta_schedule=BETA_SCHEDULE, prediction_type="v_prediction"
    )


def inference_scheduler() -> DPMSolverMultistepScheduler:
    return DPMSolverMultistepScheduler(
        num_train_timesteps=TRAIN_TIMESTEPS,
        beta_schedule=BETA_SCHEDULE,
        prediction_type="v_prediction",
        algorithm_type="dpmsolver++",
        solver_order=2,
        use_karras_sigmas=False,
        timestep_spacing="trailing",
    )


@dataclass
class TrainingSet:
    pixels: torch.Tensor  # [N, 12, 16, 16] in [-1, 1]
    embeddings: torch.Tensor  # [N, V, 384] caption variant embeddings
    empty: torch.Tensor  # [384] embedding of the empty prompt, the unconditional input
    names: list[str]


def build_training_set(encoder: SentenceEncoder) -> TrainingSet:
    samples = load_emoji(NATIVE_SIZE)
    pixels = F.pixel_unshuffle(images_to_tensor([s.image for s in samples]), UNSHUFFLE)
    variants = len(samples[0].captions)
    captions = [c for s in samples for c in s.captions]
    embeddings = encoder.encode(captions).reshape(len(samples), variants, EMBEDDING_DIM)
    return TrainingSet(pixels, embeddings, encoder.encode([""])[0], [s.name for s in samples])


class Trainer:
    """One training run; its whole state is checkpointable."""

    def __init__(self, config: TrainConfig, data: TrainingSet, checkpoint_dir: Path) -> None:
        self.config = config
        self.data = data
        self.checkpoint_dir = checkpoint_dir
        torch.manual_seed(config.seed)
        self.unet = build_unet(config.width)
        self.ema = build_unet(config.width)
        self.ema.load_state_dict(self.unet.state_dict())
        self.ema.requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.unet.parameters(), lr=config.learning_rate, weight_decay=1e-2)
        self.scheduler = training_scheduler()
        alphas = self.scheduler.alphas_cumprod
        self.snr = alphas / (1 - alphas)
        self.step = 0
        self.rng = np.random.default_rng(config.seed)
        self.order: list[int] = []
        self.phases: list[dict[str, Any]] = []

    def begin_phase(self) -> None:
        """Record where this run's objective and learning rate start, when they differ from the last run's."""
        phase = {"loss_weighting": self.config.loss_weighting, "learning_rate": self.config.learning_rate}
        last = self.phases[-1] if self.phases else {}
        if any(last.get(key) != value for key, value in phase.items()):
            self.phases.append({"from_step": self.step, **phase})

    def lr_at(self, step: int) -> float:
        return self.config.learning_rate * min(1.0, (step + 1) / self.config.warmup_steps)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        count = len(self.data.names)
        indices = []
        for _ in range(self.config.batch_size):
            if not self.order:
                self.order = self.rng.permutation(count).tolist()
            indices.append(self.order.pop())
        index = torch.tensor(indices)
        variant = torch.from_numpy(self.rng.integers(0, self.data.embeddings.shape[1], len(indices)))
        embeddings = self.data.embeddings[index, variant].clone()
        drop = torch.from_numpy(self.rng.random(len(indices)) < self.config.cfg_dropout)
        embeddings[drop] = self.data.empty
        return self.data.pixels[index], embeddings

    def loss(
        self, clean: torch.Tensor, embeddings: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Min-SNR-weighted v-prediction loss at random timesteps (fixed ones when ``generator`` is given)."""
        noise = torch.randn(clean.shape, generator=generator)
        t = torch.randint(0, TRAIN_TIMESTEPS, (clean.shape[0],), generator=generator)
        noisy = self.scheduler.add_noise(clean, noise, t)
        target = self.scheduler.get_velocity(clean, noise, t)
        pred = self.unet(noisy, t, encoder_hidden_states=embeddings[:, None, :], class_labels=embeddings).sample
        per_image = F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))
        if self.config.loss_weighting == "uniform":
            return per_image.mean()
        snr = self.snr[t]
        weight = torch.clamp(snr, max=self.config.min_snr_gamma) / (snr + 1)
        return (weight * per_image).mean()

    @torch.no_grad()
    def validation_loss(self, seed: int = 0, repeats: int = 4) -> float:
        """The loss on every image with the first caption, at fixed noise and timesteps: comparable across steps."""
        generator = torch.Generator().manual_seed(seed)
        clean, embeddings = self.data.pixels, self.data.embeddings[:, 0]
        return float(sum(self.loss(clean, embeddings, generator) for _ in range(repeats)) / repeats)

    def train_step(self) -> float:
        clean, embeddings = self.next_batch()
        loss = self.loss(clean, embeddings)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.unet.parameters(), 1.0)
        self.optimizer.step()
        self.update_ema()
        self.step += 1
        return float(loss.detach())

    @torch.no_grad()
    def update_ema(self) -> None:
        decay = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))
        for ema_param, param in zip(self.ema.parameters(), self.unet.parameters(), strict=True):
            ema_param.lerp_(param, 1 - decay)

    def state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "unet": self.unet.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": self.rng.bit_generator.state,
            "order": self.order,
            "width": self.config.width,
            "phases": self.phases,
        }

    def save_checkpoint(self) -> None:
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        final = self.checkpoint_dir / "checkpoint.pt"
        partial = final.with_suffix(".pt.tmp")
        torch.save(self.state(), partial)
        os.replace(partial, final)

    def load_checkpoint(self) -> bool:
        path = self.checkpoint_dir / "checkpoint.pt"
        if not path.exists():
            return False
        state = torch.load(path, weights_only=False)
        self.unet.load_state_dict(state["unet"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        self.rng.bit_generator.state = state["numpy_rng"]
        self.order = list(state["order"])
        self.step = int(state["step"])
        self.phases = list(
            state.get(
                "phases", [{"from_step": 0, "loss_weighting": "min-snr", "learning_rate": TrainConfig.learning_rate}]
            )
        )
        return True

    def init_from_export(self, directory: Path) -> None:
        """Start from shipped weights (model and EMA both), with a fresh optimizer: for when checkpoints are gone."""
        exported = UNet2DConditionModel.from_pretrained(directory / "unet").to(torch.float32)
        self.unet.load_state_dict(exported.state_dict())
        self.ema.load_state_dict(exported.state_dict())
        record = directory / "training.json"
        recorded = json.loads(record.read_text()) if record.exists() else {}
        self.step = int(recorded.get("step", 0))
        self.phases = list(recorded.get("phases", []))

    def export(self, out: Path) -> None:
        export_pipeline(
            self.ema,
            out,
            {
                "step": self.step,
                "batch_size": self.config.batch_size,
                "images": len(self.data.names),
                "seed": self.config.seed,
                "phases": self.phases,
            },
        )


def export_pipeline(unet: UNet2DConditionModel, out: Path, record: dict[str, Any] | None = None) -> None:
    """Write the EMA UNet (fp16) and the inference scheduler as a diffusers directory, atomically."""
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    half = build_unet(unet.config.block_out_channels[0])
    half.load_state_dict(unet.state_dict())
    pipeline = EmojiDiffusionPipeline(unet=half.to(torch.float16), scheduler=inference_scheduler())
    pipeline.save_pretrained(partial, safe_serialization=True)
    if record is not None:
        (partial / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=TrainConfig.steps, help="total steps to reach")
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--learning-rate", type=float, default=TrainConfig.learning_rate)
    parser.add_argument("--width", type=int, default=TrainConfig.width)
    parser.add_argument("--loss-weighting", choices=("min-snr", "uniform"), default=TrainConfig.loss_weighting)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--checkpoint-every", type=int, default=TrainConfig.checkpoint_every)
    parser.add_argument("--export-every", type=int, default=TrainConfig.export_every)
    parser.add_argument("--checkpoint-dir", type=Path, default=Path.home() / ".cache" / "limner" / "train-builtin")
    parser.add_argument("--out", type=Path, default=Path.home() / ".cache" / "limner" / "emoji-32")
    parser.add_argument(
        "--init-from", type=Path, default=None, help="start from an exported model when no checkpoint exists"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        loss_weighting=args.loss_weighting,
        width=args.width,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        export_every=args.export_every,
    )
    random.seed(config.seed)
    data = build_training_set(SentenceEncoder())
    trainer = Trainer(config, data, args.checkpoint_dir)
    resumed = trainer.load_checkpoint()
    if not resumed and args.init_from is not None:
        trainer.init_from_export(args.init_from)
    trainer.begin_phase()
    params = sum(p.numel() for p in trainer.unet.parameters())
    origin = "resumed at" if resumed else "from"
    print(f"{len(data.names)} images, {params / 1e6:.1f}M parameters, {origin} step {trainer.step}")

    log_path = args.checkpoint_dir / "loss.jsonl"
    args.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    losses: list[float] = []
    started = time.monotonic()
    with log_path.open("a") as log, tqdm(total=config.steps, initial=trainer.step, unit="step") as bar:
        while trainer.step < config.steps:
            losses.append(trainer.train_step())
            bar.update(1)
            if trainer.step % config.log_every == 0:
                mean = sum(losses) / len(losses)
                record = {
                    "step": trainer.step,
                    "loss": round(mean, 5),
                    "lr": trainer.lr_at(trainer.step),
                    "elapsed_s": round(time.monotonic() - started, 1),
                }
                log.write(json.dumps(record) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{mean:.4f}")
                losses.clear()
            if trainer.step % config.checkpoint_every == 0:
                trainer.save_checkpoint()
            if trainer.step % config.export_every == 0:
                trainer.export(args.out)
    trainer.save_checkpoint()
    trainer.export(args.out)
    print(f"exported to {args.out} at step {trainer.step}")


if __name__ == "__main__":
    main()
