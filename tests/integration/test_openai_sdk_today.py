"""Today's ``openai`` SDK (pinned in the dev extra) over real HTTP: every image model name it lists, every
parameter it sends, and the answer fields it reads (``usage``, ``quality``, ``background``,
``safety_identifier``, ``revised_prompt``), the way a client written against OpenAI uses them."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any, get_args

import httpx
import openai
import pytest
from openai.types import ImageEditCompletedEvent, ImageGenCompletedEvent, ImageModel, ImagesResponse
from PIL import Image

from limner.config.defaults import BUILTIN_MODEL_ID, default_models
from limner.core.styles import get_style
from tests.support.sdk import data_of

SDK_MODELS: tuple[str, ...] = get_args(ImageModel)
GPT_IMAGE = tuple(name for name in SDK_MODELS if not name.startswith("dall-e"))


@pytest.fixture
def client(pattern_server: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=pattern_server + "/v1", api_key="unused", max_retries=0) as sdk:
        yield sdk


def decode(b64: str | None) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64 or "")))
    image.load()
    return image


def png(size: tuple[int, int], color: tuple[int, ...] = (200, 30, 30), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, "PNG")
    return buffer.getvalue()


# --- model names ------------------------------------------------------------------------------------------


def test_the_sdk_lists_the_names_this_suite_expects() -> None:
    assert openai.__version__ == "3.57.0", "pinned in pyproject's dev extra; update both together"
    assert {"gpt-image-1.5", "gpt-image-2", "gpt-image-2.5-flare", "chatgpt-image-latest"} <= set(SDK_MODELS)


def test_a_fresh_catalog_answers_to_every_sdk_model_name() -> None:
    (builtin,) = default_models()
    assert builtin.id == BUILTIN_MODEL_ID
    assert set(SDK_MODELS) <= set(builtin.aliases)


@pytest.mark.parametrize("model", SDK_MODELS)
def test_every_sdk_model_name_generates(client: openai.OpenAI, model: str) -> None:
    result = client.images.generate(model=model, prompt="a red apple", size="256x256")
    (item,) = data_of(result)
    if model in GPT_IMAGE:
        assert item.url is None and decode(item.b64_json).size == (256, 256), "GPT image models answer base64"
        assert result.usage is not None and result.usage.total_tokens > 0
        assert (result.quality, result.background, result.output_format) == ("high", "opaque", "png")
        assert item.revised_prompt is None, "GPT image models revise no prompt"
    else:
        image = Image.open(io.BytesIO(httpx.get(item.url or "").content))
        assert image.size == (256, 256), "DALL-E answers URLs"
        assert result.usage is None
        assert item.revised_prompt == ("a red apple" if model == "dall-e-3" else None)
    assert client.models.retrieve(model).id == model


# --- usage ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quality", "size", "published"),
    [("low", "1024x1024", 272), ("medium", "1024x1536", 1584), ("high", "1536x1024", 6208)],
)
def test_usage_counts_openai_published_image_tokens(
    client: openai.OpenAI, quality: Any, size: str, published: int
) -> None:
    result = client.images.generate(model="gpt-image-1", prompt="hello world", size=size, quality=quality, n=2)
    usage = result.usage
    assert usage is not None and usage.output_tokens_details is not None
    assert usage.output_tokens == usage.output_tokens_details.image_tokens == 2 * published
    assert usage.input_tokens == usage.input_tokens_details.text_tokens == 2, "'hello world' is 2 o200k tokens"
    assert usage.total_tokens == 2 + 2 * published
    assert result.quality == quality and result.size == size


@pytest.mark.parametrize(
    ("quality", "reported"), [("xhigh", "xhigh"), ("max", "max"), ("auto", "high"), (None, "high")]
)
def test_qualities_without_published_counts_are_counted_as_high(
    client: openai.OpenAI, quality: Any, reported: str
) -> None:
    kwargs = {"quality": quality} if quality else {}
    result = client.images.generate(model="gpt-image-2.5-sunburst", prompt="x", size="1024x1024", **kwargs)
    assert result.quality == reported
    assert result.usage is not None and result.usage.output_tokens == 4160


def test_edit_usage_counts_input_images(client: openai.OpenAI) -> None:
    result = client.images.edit(
        model="gpt-image-1.5",
        image=[("a.png", png((1024, 1024)), "image/png"), ("b.png", png((512, 512)), "image/png")],
        prompt="hello world",
        size="1024x1024",
        quality="low",
    )
    usage = result.usage
    assert usage is not None
    # GPT-4o's published vision figures: 1024x1024 -> 768x768, 4 tiles, 765; 512x512 -> 1 tile, 255
    assert (usage.input_tokens_details.image_tokens, usage.input_tokens_details.text_tokens) == (765 + 255, 2)
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (1022, 272, 1294)


def test_streamed_usage_adds_up_to_the_request(client: openai.OpenAI) -> None:
    events = list(
        client.images.generate(
            model="gpt-image-2", prompt="hello world", size="64x64", n=2, stream=True, safety_identifier="user-7f3a"
        )
    )
    completed = [event for event in events if isinstance(event, ImageGenCompletedEvent)]
    assert len(completed) == 2
    # one token per 16x16 pixels at high quality: rows x (columns + 1) = 4 x 5 per image; the input once
    assert [event.usage.output_tokens for event in completed] == [20, 20]
    assert [event.usage.input_tokens for event in completed] == [2, 0]
    assert sum(event.usage.total_tokens for event in completed) == 42
    assert {(event.quality, event.background, event.safety_identifier) for event in completed} == {
        ("high", "opaque", "user-7f3a")
    }


# --- background, revised_prompt ---------------------------------------------------------------------------


@pytest.mark.parametrize("background", ["transparent", "opaque", "auto"])
def test_background_reports_what_was_delivered(client: openai.OpenAI, background: Any) -> None:
    result = client.images.generate(
        model="gpt-image-1-mini", prompt="a sticker", size="64x64", background=background, output_format="webp"
    )
    image = decode(data_of(result)[0].b64_json)
    kept_alpha = image.mode == "RGBA" and min(image.getchannel("A").getdata()) < 255
    assert result.background == ("transparent" if kept_alpha else "opaque")


def test_revised_prompt_is_the_prompt_the_engine_ran(client: openai.OpenAI) -> None:
    result = client.images.generate(
        model="dall-e-3", prompt="a lighthouse", size="256x256", extra_body={"style_preset": "line-art"}
    )
    expected, _ = get_style("line-art").apply("a lighthouse", None)
    assert expected != "a lighthouse"
    assert data_of(result)[0].revised_prompt == expected


# --- parameters -------------------------------------------------------------------------------------------


def test_todays_parameters_are_accepted_and_reported(client: openai.OpenAI) -> None:
    result = client.images.generate(
        model="gpt-image-2.5-flare",
        prompt="a cat",
        size="64x64",
        quality="max",
        complexity="high",
        moderation="low",
        background="opaque",
        output_format="jpeg",
        output_compression=40,
        safety_identifier="hash-of-alice",
        user="alice",
    )
    assert decode(data_of(result)[0].b64_json).format == "JPEG"
    assert (result.quality, result.background, result.output_format) == ("max", "opaque", "jpeg")
    assert result.safety_identifier == "hash-of-alice", "a non-empty safety_identifier wins over user"
    fallback = client.images.generate(model="gpt-image-2", prompt="a cat", size="64x64", user="alice")
    assert fallback.safety_identifier == "alice", "user stands in when safety_identifier is omitted"
    assert client.images.generate(model="gpt-image-2", prompt="a cat", size="64x64").safety_identifier is None


def test_todays_edit_parameters_are_accepted(client: openai.OpenAI) -> None:
    result = client.images.edit(
        model="chatgpt-image-latest",
        image=("in.png", png((64, 64)), "image/png"),
        prompt="add a hat",
        size="64x64",
        complexity="low",
        input_fidelity="high",
        quality="xhigh",
        safety_identifier="hash-of-bob",
    )
    assert decode(data_of(result)[0].b64_json).size == (64, 64)
    assert (result.quality, result.safety_identifier) == ("xhigh", "hash-of-bob")
    events = list(
        client.images.edit(
            model="gpt-image-2", image=("in.png", png((64, 64)), "image/png"), prompt="add a hat", stream=True
        )
    )
    assert isinstance(events[-1], ImageEditCompletedEvent) and events[-1].usage.input_tokens_details.image_tokens == 255


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"output_format": "gif"}, "output_format"),
        ({"output_format": "svg"}, "output_format"),
        ({"frame_count": 4}, "frame_count"),
        ({"frame_duration_ms": 120}, "frame_duration_ms"),
        ({"svg": {"model": "gpt-5"}}, "svg"),
    ],
)
def test_what_cannot_be_delivered_is_refused_naming_the_field(
    client: openai.OpenAI, kwargs: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model="gpt-image-2", prompt="a cat", **kwargs)
    assert (caught.value.code, caught.value.param) == ("unsupported_value", param)
    assert param in caught.value.message and "this server" in caught.value.message


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"markup": ("markup.png", png((64, 64), (0, 0, 0, 0), "RGBA"), "image/png")}, "markup"),
        ({"svg": {"model": "gpt-5", "reasoning": {"effort": "low"}}}, "svg"),
        ({"output_format": "gif", "frame_count": 3}, "output_format"),
    ],
)
def test_edits_refuse_what_cannot_be_delivered(client: openai.OpenAI, kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.edit(
            model="gpt-image-2.5-flare", image=("in.png", png((64, 64)), "image/png"), prompt="x", **kwargs
        )
    assert (caught.value.code, caught.value.param) == ("unsupported_value", param)


def test_unknown_fields_are_still_unrecognized(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model="gpt-image-2", prompt="x", extra_body={"prompt_rewriter": "on"})
    assert caught.value.param == "prompt_rewriter"
    assert "Unrecognized request argument supplied: 'prompt_rewriter'" in caught.value.message


def test_a_response_the_sdk_parses_whole(client: openai.OpenAI) -> None:
    result = client.images.generate(model="gpt-image-1.5", prompt="x", size="64x64")
    again = ImagesResponse.model_validate(result.model_dump())
    assert again.usage is not None and again.usage.input_tokens_details.text_tokens == 1
