"""The built-in model's parts, trained tiny here: data, caption encoder, upsampler, export, the pipeline's stages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from limner.builtin.caption_encoder import features, words
from limner.builtin.emoji_data import FONT_PATHS
from limner.builtin.emoji_set import EmojiEntry, load_glyphs
from limner.builtin.glyph_pipeline import EmojiGlyphPipeline, GlyphBases
from limner.builtin.glyph_store import BASE_SIDE, base_tiles, glyph_tensor
from limner.builtin.train_encoder import EncoderConfig
from limner.builtin.train_encoder import train as train_encoder
from limner.builtin.train_upsampler import TARGET, UpsamplerConfig
from limner.builtin.train_upsampler import train as train_upsampler
from limner.builtin.upsampler import Upsampler, stages_for
from limner.builtin.variety import Variation, draw_variation

pytestmark = pytest.mark.skipif(not any(p.exists() for p in FONT_PATHS), reason="fonts-noto-color-emoji not installed")

ENTRIES = [
    EmojiEntry("\U0001f355", "1F355", "pizza", ("cheese", "pepperoni", "slice"), ("pizza",), 4),
    EmojiEntry("\U0001f680", "1F680", "rocket", ("launch", "space"), ("rocket",), 5),
    EmojiEntry("\U0001f47b", "1F47B", "ghost", ("boo", "halloween"), ("ghost",), 0),
    EmojiEntry("\U0001f499", "1F499", "blue heart", ("blue", "love"), ("blue heart",), 0),
    EmojiEntry("\U0001f34e", "1F34E", "red apple", ("apple", "fruit", "red"), ("apple",), 4),
    EmojiEntry("\U0001f1ef\U0001f1f5", "1F1EF-1F1F5", "flag: Japan", ("flag",), ("jp",), 9),
    EmojiEntry("\U000e0000", "E0000", "not drawn", (), (), 7),
]


@pytest.fixture(scope="module")
def glyphs() -> tuple[list[EmojiEntry], list[Image.Image]]:
    torch.set_num_threads(1)
    return load_glyphs(ENTRIES)


@pytest.fixture(scope="module")
def pipe(
    glyphs: tuple[list[EmojiEntry], list[Image.Image]], tmp_path_factory: pytest.TempPathFactory
) -> EmojiGlyphPipeline:
    entries, images = glyphs
    checkpoints = tmp_path_factory.mktemp("checkpoints")
    captions = train_encoder(EncoderConfig(steps=150, batch_size=32), entries, checkpoints).model
    upsampler = train_upsampler(
        UpsamplerConfig(steps=20, batch_size=4), checkpoints, glyph_tensor(TARGET, images)
    ).model
    emoji = [{"emoji": e.emoji, "hexcode": e.hexcode, "label": e.label} for e in entries]
    return EmojiGlyphPipeline(captions, upsampler, GlyphBases(base_tiles(images)), emoji)


def test_glyphs_keep_their_transparency_and_missing_ones_are_left_out(glyphs: tuple[list, list]) -> None:
    entries, images = glyphs
    assert [e.label for e in entries] == [e.label for e in ENTRIES[:-1]], "the unassigned code point has no glyph"
    for image in images:
        alpha = np.asarray(image.getchannel("A"))
        assert image.mode == "RGBA" and alpha[0, 0] == 0 and alpha.max() == 255
    assert base_tiles(images).shape == (6, BASE_SIDE, BASE_SIDE, 4)


def test_captions_drop_words_about_the_medium_and_hash_the_same_everywhere() -> None:
    assert words("A picture of a Slice of Pizzá, please!") == ["slice", "pizza"]
    assert features("a spaceship") == features("spaceship") and features("") == ([], [])
    assert set(features("spaceship")[0]) & set(features("space")[0]), "word pieces are shared"


def test_the_encoder_trains_deterministically_and_resumes_exactly(glyphs: tuple[list, list], tmp_path: Path) -> None:
    entries, _ = glyphs
    straight = train_encoder(EncoderConfig(steps=40, batch_size=16, checkpoint_every=20), entries, tmp_path / "a")
    train_encoder(EncoderConfig(steps=40, batch_size=16, checkpoint_every=20), entries, tmp_path / "b", until=20)
    resumed = train_encoder(EncoderConfig(steps=40, batch_size=16, checkpoint_every=20), entries, tmp_path / "b")
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name


def test_the_upsampler_trains_deterministically_resumes_exactly_and_learns(
    glyphs: tuple[list, list], tmp_path: Path
) -> None:
    targets = glyph_tensor(TARGET, glyphs[1])
    config = {"batch_size": 4, "checkpoint_every": 5, "log_every": 5}
    straight = train_upsampler(UpsamplerConfig(steps=30, **config), tmp_path / "a", targets)
    train_upsampler(UpsamplerConfig(steps=30, **config), tmp_path / "b", targets, until=15)
    resumed = train_upsampler(UpsamplerConfig(steps=30, **config), tmp_path / "b", targets)
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    log = (tmp_path / "a" / "upsampler-loss.jsonl").read_text().splitlines()
    losses = [json.loads(line)["loss"] for line in log]
    assert losses[-1] < losses[0], losses


def test_the_upsampler_makes_images_four_times_larger_and_valid() -> None:
    torch.manual_seed(0)
    pixels = torch.rand(2, 4, 8, 8)
    pixels[:, :3] *= pixels[:, 3:]
    with torch.no_grad():
        out = Upsampler(8, 1)(pixels)
    assert out.shape == (2, 4, 32, 32)
    assert bool((out[:, :3] <= out[:, 3:] + 1e-6).all()) and float(out.min()) >= 0 and float(out.max()) <= 1
    assert [stages_for(64, side) for side in (32, 64, 65, 256, 257, 1024)] == [0, 0, 1, 1, 2, 2]


def test_a_saved_model_loads_back_and_draws_the_same(pipe: EmojiGlyphPipeline, tmp_path: Path) -> None:
    pipe.save_pretrained(tmp_path / "model", training={"test": True})
    loaded = EmojiGlyphPipeline.from_pretrained(tmp_path / "model")
    assert loaded.emoji == pipe.emoji and loaded.record == {"test": True}
    assert torch.equal(loaded.bases.tiles, pipe.bases.tiles)

    def draw(model: EmojiGlyphPipeline) -> bytes:
        [image] = model("pizza", width=96, height=96, generator=[torch.Generator().manual_seed(1)]).images
        assert image is not None
        return image.tobytes()

    assert draw(loaded) == draw(pipe)


def test_the_encoder_finds_each_emoji_by_name_and_keyword(pipe: EmojiGlyphPipeline) -> None:
    assert pipe.choose(["a slice of pizza", "a rocket launch", "boo", "a blue heart", "a red apple"]) == [0, 1, 2, 3, 4]


def test_a_prompt_of_no_subject_lets_the_seed_pick(pipe: EmojiGlyphPipeline) -> None:
    picks = {pipe.choose(["a picture of"], None, [torch.Generator().manual_seed(seed)])[0] for seed in range(12)}
    assert len(picks) > 1 and pipe.choose([""]) == pipe.choose([""])


def test_seeds_vary_the_drawing_not_the_subject(pipe: EmojiGlyphPipeline) -> None:
    variations = [draw_variation(torch.Generator().manual_seed(seed)) for seed in range(3)]
    assert len({v.tilt for v in variations}) == 3 and draw_variation(None) == Variation()
    for v in variations:
        assert 0.7 <= v.scale <= 0.92 and abs(v.tilt) <= 12 and abs(v.shift_x) <= (1 - v.scale) / 2
    images = pipe("a red apple", num_images_per_prompt=3, width=64, height=64,
                  generator=[torch.Generator().manual_seed(s) for s in range(3)]).images  # fmt: skip
    arrays = [np.asarray(image, dtype=np.float32) for image in images if image is not None]
    assert np.abs(arrays[0] - arrays[1]).mean() > 3 and np.abs(arrays[1] - arrays[2]).mean() > 3


def test_the_stages_are_reported_previewed_and_may_drop_rows(pipe: EmojiGlyphPipeline) -> None:
    steps: list[tuple[int, int]] = []
    previews: list[tuple[int, list[tuple[int, int]]]] = []
    asked = iter([[True, True], [True, False], [True, False]])
    images = pipe(
        "ghost",
        num_images_per_prompt=2,
        width=1024,
        height=512,
        generator=[torch.Generator().manual_seed(s) for s in (1, 2)],
        step_callback=lambda index, total: steps.append((index, total)),
        preview_callback=lambda done, shown: previews.append((done, [image.size for image in shown])),
        preview_every=1,
        rows_wanted=lambda: next(asked),
    ).images
    assert steps == [(0, 4), (1, 4), (2, 4), (3, 4)], "choose, two upsampling passes, place"
    assert [done for done, _ in previews] == [1, 2, 3] and len(previews[1][1]) == 1, (
        "the dropped row is no longer shown"
    )
    assert images[1] is None and images[0] is not None and images[0].size == (1024, 512)


def test_more_steps_than_stages_pace_the_progress_and_previews_without_changing_the_image(
    pipe: EmojiGlyphPipeline,
) -> None:
    steps: list[int] = []
    previews: list[int] = []

    def draw(**extra: Any) -> bytes:
        [image] = pipe("ghost", width=256, height=256, generator=[torch.Generator().manual_seed(3)], **extra).images
        assert image is not None
        return image.tobytes()

    paced = draw(
        num_inference_steps=8,
        step_callback=lambda index, total: steps.append(total * 100 + index + 1),
        preview_callback=lambda done, shown: previews.append(done),
        preview_every=4,
    )
    assert steps == [801, 802, 803, 804, 805, 806, 807, 808], "eight steps over three stages, each once"
    assert previews == [4] and paced == draw()


def test_bad_arguments_are_value_errors(pipe: EmojiGlyphPipeline) -> None:
    with pytest.raises(ValueError, match="strength"):
        pipe("pizza", strength=1.5, image=Image.new("RGB", (8, 8)))
    with pytest.raises(ValueError, match="mask_image needs image"):
        pipe("pizza", mask_image=Image.new("L", (8, 8)))
    with pytest.raises(ValueError, match="PIL images only"):
        pipe("pizza", output_type="pt")


def test_a_wrong_format_is_refused_on_load(pipe: EmojiGlyphPipeline, tmp_path: Path) -> None:
    pipe.save_pretrained(tmp_path / "model")
    config = tmp_path / "model" / "config.json"
    config.write_text(config.read_text().replace('"format": 1', '"format": 99'))
    with pytest.raises(ValueError, match="format 99, expected 1"):
        EmojiGlyphPipeline.from_pretrained(tmp_path / "model")
