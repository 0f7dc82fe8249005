"""The built-in model's training material and loop, on a tiny config (tests never train for real)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from limner.builtin.emoji_data import caption_variants, find_font, load_emoji
from limner.builtin.pipeline import EmojiDiffusionPipeline
from limner.builtin.train import TrainConfig, Trainer, TrainingSet, export_pipeline

try:
    find_font()
except FileNotFoundError:  # pragma: no cover - the test command installs the font
    pytest.skip("fonts-noto-color-emoji is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def emoji() -> list:
    return load_emoji(32)


def test_curated_set_is_pictographic_and_deterministic(emoji: list) -> None:
    names = [sample.name for sample in emoji]
    assert 400 <= len(emoji) <= 600
    assert {"red apple", "grinning face", "dog face", "blue heart", "rocket", "snowman"} <= set(names)
    assert not any("skin tone" in name or "keycap" in name or "arrow" in name for name in names)
    assert all(sample.image.size == (32, 32) and sample.image.mode == "RGB" for sample in emoji)
    again = load_emoji(32)
    assert [s.image.tobytes() for s in again[:20]] == [s.image.tobytes() for s in emoji[:20]]


def test_caption_variants_use_the_right_article() -> None:
    assert caption_variants("apple")[1] == "an apple"
    assert caption_variants("red apple") == (
        "red apple",
        "a red apple",
        "red apple emoji",
        "an emoji of a red apple",
        "a picture of a red apple",
    )


def tiny_set(emoji: list) -> TrainingSet:
    """Eight images with random 'embeddings': the loop, not the text encoder, is under test here."""
    import torch.nn.functional as F

    from limner.builtin.pipeline import images_to_tensor

    samples = emoji[:8]
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.nn.functional.normalize(torch.randn(8, 5, 384, generator=generator), dim=-1)
    pixels = F.pixel_unshuffle(images_to_tensor([s.image for s in samples]), 2)
    return TrainingSet(pixels, embeddings, torch.zeros(384), [s.name for s in samples])


def test_a_few_steps_lower_the_loss_and_resume_exactly(emoji: list, tmp_path: Path) -> None:
    config = TrainConfig(batch_size=8, width=16, warmup_steps=1, learning_rate=2e-3, checkpoint_every=2)
    trainer = Trainer(config, tiny_set(emoji), tmp_path / "ckpt")
    before = trainer.validation_loss()
    losses = [trainer.train_step() for _ in range(12)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert trainer.validation_loss() < 0.8 * before
    trainer.save_checkpoint()
    assert not list((tmp_path / "ckpt").glob("*.tmp"))

    resumed = Trainer(config, tiny_set(emoji), tmp_path / "ckpt")
    assert resumed.load_checkpoint() and resumed.step == 12
    torch.manual_seed(5)
    expected = trainer.train_step()
    torch.manual_seed(5)
    assert resumed.train_step() == pytest.approx(expected, rel=1e-5)


def test_export_is_a_diffusers_directory_loadable_by_class(emoji: list, tmp_path: Path) -> None:
    trainer = Trainer(TrainConfig(batch_size=4, width=16), tiny_set(emoji), tmp_path / "ckpt")
    trainer.train_step()
    trainer.export(tmp_path / "model")
    assert (tmp_path / "model" / "model_index.json").exists()
    assert (tmp_path / "model" / "unet" / "diffusion_pytorch_model.safetensors").exists()
    pipe = EmojiDiffusionPipeline.from_pretrained(tmp_path / "model")
    assert isinstance(pipe, EmojiDiffusionPipeline)
    export_pipeline(pipe.unet, tmp_path / "again")  # re-export replaces atomically
    assert not (tmp_path / "again.partial").exists()


def test_a_change_of_objective_is_a_recorded_phase(emoji: list, tmp_path: Path) -> None:
    import json

    first = Trainer(TrainConfig(batch_size=4, width=16, checkpoint_every=1), tiny_set(emoji), tmp_path / "ckpt")
    first.begin_phase()
    first.train_step()
    first.save_checkpoint()
    fixed = torch.Generator().manual_seed(3)
    clean, embeddings = first.data.pixels[:4], first.data.embeddings[:4, 0]
    min_snr = float(first.loss(clean, embeddings, fixed).detach())

    config = TrainConfig(batch_size=4, width=16, loss_weighting="uniform", learning_rate=1e-4)
    second = Trainer(config, tiny_set(emoji), tmp_path / "ckpt")
    assert second.load_checkpoint()
    second.begin_phase()
    second.begin_phase()  # a rerun with the same settings is the same phase
    uniform = float(second.loss(clean, embeddings, torch.Generator().manual_seed(3)).detach())
    assert uniform > min_snr, "uniform weighting counts the noisiest timesteps that min-SNR all but drops"
    second.export(tmp_path / "model")
    phases = json.loads((tmp_path / "model" / "training.json").read_text())["phases"]
    assert [(p["from_step"], p["loss_weighting"]) for p in phases] == [(0, "min-snr"), (1, "uniform")]
