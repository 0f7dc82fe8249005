"""The OpenAI engine against a fake that refuses what each model family does not take."""

from __future__ import annotations

from collections.abc import Callable

from limner.core.models import GeneratedImage, Mode
from limner.engines.catalog import ModelEntry
from limner.engines.upstream.base import UpstreamEngine
from tests.engines.upstream.conftest import Fake, request
from tests.engines.upstream.fakes.common import KEY

MakeEngine = Callable[[ModelEntry], UpstreamEngine]


async def test_dall_e_2_generations_as_base64(fakes: dict[str, Fake], make_engine: MakeEngine) -> None:
    fake = fakes["openai"]
    engine = make_engine(fake.entry())
    images = await engine.generate(request(n=2, size=(512, 512)))
    assert [image.image.size for image in images] == [(64, 64), (64, 64)]
    (seen,) = fake.control.posts()
    assert seen.path == "/v1/images/generations"
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert seen.body == {
        "prompt": "a red fox in the snow",
        "model": "dall-e-2",
        "n": 2,
        "size": "512x512",
        "response_format": "b64_json",
        "_files": {},
        "_endpoint": "generations",
    }
    assert engine.capabilities.allowed_sizes == ((256, 256), (512, 512), (1024, 1024))


async def test_dall_e_2_url_answers_are_downloaded(fakes: dict[str, Fake], make_engine: MakeEngine) -> None:
    fake = fakes["openai"]
    engine = make_engine(fake.entry(options={"response_format": "url"}))
    (image,) = await engine.generate(request(size=(256, 256)))
    assert isinstance(image, GeneratedImage) and image.source_url and image.source_url.endswith("/files/256x256.png")
    downloads = [seen for seen in fake.control.requests if seen.method == "GET"]
    assert len(downloads) == 1 and "authorization" not in downloads[0].headers
    assert engine.calls[-1].requests == 2


async def test_dall_e_3_makes_one_call_per_image(fakes: dict[str, Fake], make_engine: MakeEngine) -> None:
    fake = fakes["openai"]
    engine = make_engine(fake.entry(upstream_model="dall-e-3"))
    images = await engine.generate(request(n=3, size=(1792, 1024), quality="hd", rendering_style="natural"))
    assert len(images) == 3
    posts = fake.control.posts()
    assert len(posts) == 3
    assert all(p.body["n"] == 1 and p.body["quality"] == "hd" and p.body["style"] == "natural" for p in posts)
    assert engine.capabilities.modes == frozenset({Mode.GENERATE})


async def test_gpt_image_edit_with_several_images_and_a_mask(fakes: dict[str, Fake], make_engine: MakeEngine) -> None:
    from PIL import Image

    fake = fakes["openai"]
    engine = make_engine(fake.entry(upstream_model="gpt-image-1"))
    mask = Image.new("RGBA", (48, 32), (0, 0, 0, 0))
    (image,) = await engine.generate(
        request(mode=Mode.COMPOSE, images=2, size=(1536, 1024), mask=mask, quality="standard")
    )
    assert image.image.size == (64, 43)
    (seen,) = fake.control.posts()
    assert seen.path == "/v1/images/edits"
    assert seen.body["_files"] == {"image[]": 2, "mask": 1}
    assert seen.body["output_format"] == "png" and seen.body["quality"] == "auto"
    assert "response_format" not in seen.body


async def test_dall_e_2_variation(fakes: dict[str, Fake], make_engine: MakeEngine) -> None:
    fake = fakes["openai"]
    engine = make_engine(fake.entry())
    images = await engine.generate(request(n=2, mode=Mode.VARIATION, images=1, prompt=""))
    assert len(images) == 2
    (seen,) = fake.control.posts()
    assert seen.path == "/v1/images/variations"
    assert seen.body["_files"] == {"image": 1} and "prompt" not in seen.body


async def test_a_size_planned_for_another_model_becomes_the_nearest_allowed(
    fakes: dict[str, Fake], make_engine: MakeEngine
) -> None:
    fake = fakes["openai"]
    engine = make_engine(fake.entry(upstream_model="dall-e-3"))
    await engine.generate(request(size=(1344, 768)))  # e.g. planned for a Gemini primary
    assert fake.control.posts()[0].body["size"] == "1792x1024"
