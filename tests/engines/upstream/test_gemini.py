"""The Gemini engine: parts in, image and text parts out, Google's error shapes."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from limner.core.errors import ModelAuthError, ModelError, ModelNotAvailable
from limner.core.models import Mode
from limner.engines.catalog import ModelEntry
from limner.engines.upstream.base import UpstreamEngine
from tests.engines.upstream.conftest import Fake, request
from tests.engines.upstream.fakes.common import KEY

MakeEngine = Callable[[ModelEntry], UpstreamEngine]


async def test_image_and_text_parts(fakes: dict[str, Fake], make_engine: MakeEngine) -> None:
    fake = fakes["gemini"]
    engine = make_engine(fake.entry())
    images = await engine.generate(request(n=2, size=(1344, 768)))
    assert [image.text for image in images] == ["Here is your image (0 inputs)."] * 2
    assert [image.seed for image in images] == [7, 8]
    assert images[0].image.size == (64, 37)
    posts = fake.control.posts()
    assert len(posts) == 2
    assert posts[0].path == "/v1beta/models/gemini-2.5-flash-image:generateContent"
    assert posts[0].headers["x-goog-api-key"] == KEY and "authorization" not in posts[0].headers
    config = posts[0].body["generationConfig"]
    assert config["responseModalities"] == ["TEXT", "IMAGE"]
    assert config["imageConfig"] == {"aspectRatio": "16:9"}
    assert sorted(post.body["generationConfig"]["seed"] for post in posts) == [7, 8]


async def test_source_images_go_as_inline_data(fakes: dict[str, Fake], make_engine: MakeEngine) -> None:
    fake = fakes["gemini"]
    engine = make_engine(fake.entry(options={"image_size": "2K"}))
    (image,) = await engine.generate(request(mode=Mode.COMPOSE, images=2))
    assert image.text == "Here is your image (2 inputs)."
    parts = fake.control.posts()[0].body["contents"][0]["parts"]
    assert parts[0] == {"text": "a red fox in the snow"}
    assert [part["inline_data"]["mime_type"] for part in parts[1:]] == ["image/png", "image/png"]
    assert fake.control.posts()[0].body["generationConfig"]["imageConfig"]["imageSize"] == "2K"


@pytest.mark.parametrize(
    ("fault", "error", "words"),
    [
        ("blocked", ModelError, "blocked the prompt (PROHIBITED_CONTENT)"),
        ("text-only", ModelError, "no image (finish reason STOP): Here is your image"),
        ("reject", ModelAuthError, "rejected limner's credentials (HTTP 400)"),
    ],
)
async def test_answers_without_an_image(
    fakes: dict[str, Fake], make_engine: MakeEngine, fault: str, error: type[Exception], words: str
) -> None:
    fake = fakes["gemini"]
    fake.control.set(fault)
    with pytest.raises(error) as caught:
        await make_engine(fake.entry()).generate(request())
    assert type(caught.value) is error and words in str(caught.value)


async def test_unknown_model(fakes: dict[str, Fake], make_engine: MakeEngine) -> None:
    fake = fakes["gemini"]
    with pytest.raises(ModelNotAvailable, match=r"does not offer model 'gemini-9'.*is not found"):
        await make_engine(fake.entry(upstream_model="gemini-9")).generate(request())
