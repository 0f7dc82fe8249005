"""OpenAI's image-token accounting: the published figures, the grid behind them, the vision estimate for
input images, and prompt tokens counted with the real ``o200k_base`` tokenizer."""

from __future__ import annotations

import pytest

from limner.core.models import TokenUsage
from limner.core.usage import (
    PUBLISHED_OUTPUT_TOKENS,
    count_usage,
    input_image_tokens,
    output_image_tokens,
    reported_quality,
    text_tokens,
    tier,
)


@pytest.mark.parametrize(("key", "published"), sorted(PUBLISHED_OUTPUT_TOKENS.items()))
def test_the_grid_reproduces_every_published_figure(key: tuple[str, int, int], published: int) -> None:
    quality, width, height = key
    cell = {"low": 64, "medium": 32, "high": 16}[quality]
    assert (height // cell) * (width // cell + 1) == published
    assert output_image_tokens(width, height, quality) == published


def test_other_sizes_are_counted_on_the_same_grid() -> None:
    assert output_image_tokens(64, 64, "high") == 4 * 5
    assert output_image_tokens(1536, 864, "medium") == 27 * 49
    assert output_image_tokens(100, 100, "low") == 2 * 3, "a partial cell counts whole"


@pytest.mark.parametrize(
    ("quality", "counted", "reported"),
    [
        ("low", "low", "low"),
        ("medium", "medium", "medium"),
        ("high", "high", "high"),
        ("xhigh", "high", "xhigh"),
        ("max", "high", "max"),
        ("auto", "high", "high"),
        (None, "high", "high"),
        ("standard", "medium", "medium"),
        ("hd", "high", "high"),
    ],
)
def test_quality_words(quality: str | None, counted: str, reported: str) -> None:
    assert (tier(quality), reported_quality(quality)) == (counted, reported)


@pytest.mark.parametrize(
    ("size", "tokens"),
    [((1024, 1024), 765), ((2048, 4096), 1105), ((512, 512), 255), ((64, 64), 255), ((4096, 1024), 765)],
)
def test_input_images_follow_gpt4o_published_vision_examples(size: tuple[int, int], tokens: int) -> None:
    assert input_image_tokens(*size) == tokens


def test_prompt_tokens_are_o200k() -> None:
    assert text_tokens("") == 0
    assert text_tokens("hello world") == 2
    assert text_tokens("<|endoftext|>") > 1, "special-token text in a prompt is ordinary text"
    assert text_tokens("漢字 " * 100) >= 100


def test_count_usage_adds_it_up() -> None:
    usage = count_usage("hello world", [(1024, 1024), (512, 512)], (1024, 1024), 3, "low")
    assert usage == TokenUsage(text_tokens=2, image_tokens=1020, output_image_tokens=3 * 272)
    assert (usage.input_tokens, usage.total_tokens) == (1022, 1022 + 816)
