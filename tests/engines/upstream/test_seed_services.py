"""The four seed services as upstreams: AI.ML, Milady, AIGNE Hub and ImagineArt, in their formats."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from limner.core.errors import ModelError, ModelNotAvailable
from limner.core.models import GeneratedImage, Mode
from limner.engines.catalog import ModelEntry
from limner.engines.upstream.base import UpstreamEngine
from tests.engines.upstream.conftest import Fake, request
from tests.engines.upstream.fakes.common import KEY

MakeEngine = Callable[[ModelEntry], UpstreamEngine]


async def test_aiml_generate_resolve_download(fakes: dict[str, Fake], make_engine: MakeEngine) -> None:
    fake = fakes["aiml"]
    engine = make_engine(fake.entry())
    (image,) = await engine.generate(request(size=(2048, 1024)))
    assert image.image.size == (64, 32)
    post, resolve, download = fake.control.requests
    assert post.path == "/v1/generation/images" and post.headers["authorization"] == f"Bearer {KEY}"
    assert post.body == {
        "model": "image-gen.pro-1.0",
        "prompt": "a red fox in the snow",
        "sequential_image_generation": "disabled",
        "response_format": "url",
        "size": "2048x1024",
        "stream": False,
        "watermark": False,
    }
    assert resolve.method == "GET" and resolve.path.startswith("/v1/media/images/orgs")
    assert resolve.headers["authorization"] == f"Bearer {KEY}"
    assert download.path.startswith("/presigned/") and "authorization" not in download.headers
    assert isinstance(image, GeneratedImage) and image.source_url and "/presigned/" in image.source_url


@pytest.mark.parametrize("response_format", ["presigned_url", "b64_json"])
async def test_aiml_other_response_formats(
    fakes: dict[str, Fake], make_engine: MakeEngine, response_format: str
) -> None:
    fake = fakes["aiml"]
    engine = make_engine(fake.entry(options={"response_format": response_format}))
    images = await engine.generate(request(n=2))
    assert len(images) == 2
    assert len(fake.control.posts()) == 2
    assert not any(seen.path.startswith("/v1/media/") for seen in fake.control.requests)


async def test_aiml_composition_sends_the_images_in_order(fakes: dict[str, Fake], make_engine: MakeEngine) -> None:
    fake = fakes["aiml"]
    await make_engine(fake.entry()).generate(request(mode=Mode.COMPOSE, images=2))
    refs = fake.control.posts()[0].body["image"]
    assert isinstance(refs, list) and len(refs) == 2 and all(ref.startswith("data:image/png;base64,") for ref in refs)


async def test_aiml_unknown_model(fakes: dict[str, Fake], make_engine: MakeEngine) -> None:
    fake = fakes["aiml"]
    with pytest.raises(ModelNotAvailable, match="does not offer model 'nope'"):
        await make_engine(fake.entry(upstream_model="nope")).generate(request())


async def test_milady_urls_and_text(fakes: dict[str, Fake], make_engine: MakeEngine) -> None:
    fake = fakes["milady"]
    engine = make_engine(fake.entry())
    images = await engine.generate(request(n=3, size=(1024, 576)))
    assert [image.text for image in images] == ["caption 0", "caption 1", "caption 2"]
    (post,) = fake.control.posts()
    assert post.body == {
        "prompt": "a red fox in the snow",
        "model": "google/gemini-2.5-flash-image",
        "aspectRatio": "16:9",
        "numImages": 3,
    }
    assert len([seen for seen in fake.control.requests if seen.path.startswith("/blob/")]) == 3


async def test_milady_inline_image_fallback_and_source_image(fakes: dict[str, Fake], make_engine: MakeEngine) -> None:
    fake = fakes["milady"]
    fake.control.set("inline")
    (image,) = await make_engine(fake.entry()).generate(request(mode=Mode.EDIT, images=1))
    assert image.text == "caption 0" and image.image.size == (64, 64)
    assert fake.control.posts()[0].body["sourceImage"].startswith("data:image/png;base64,")


@pytest.mark.parametrize(
    ("fault", "error", "words"),
    [
        ("unknown", ModelNotAvailable, "Invalid model"),
        ("insufficient", ModelError, "HTTP 402.*Insufficient credits"),
    ],
)
async def test_milady_errors(
    fakes: dict[str, Fake], make_engine: MakeEngine, fault: str, error: type[Exception], words: str
) -> None:
    fake = fakes["milady"]
    fake.control.set(fault)
    with pytest.raises(error, match=words):
        await make_engine(fake.entry()).generate(request())
    assert len(fake.control.posts()) == 1


async def test_milady_takes_at_most_four_images() -> None:
    from limner.engines.upstream.milady import MiladyEngine

    assert MiladyEngine(ModelEntry(id="m", engine="milady")).capabilities.max_images == 4


async def test_aigne_base64_by_default_with_options(fakes: dict[str, Fake], make_engine: MakeEngine) -> None:
    fake = fakes["aigne"]
    engine = make_engine(fake.entry(upstream_model="dall-e-3"))
    images = await engine.generate(request(n=2, size=(1792, 1024), quality="hd", rendering_style="vivid"))
    assert len(images) == 2
    (post,) = fake.control.posts()
    assert post.path == "/api/images/generations"
    assert post.body == {
        "prompt": "a red fox in the snow",
        "model": "dall-e-3",
        "n": 2,
        "size": "1792x1024",
        "response_format": "b64_json",
        "quality": "hd",
        "style": "vivid",
    }


async def test_aigne_urls_and_edits(fakes: dict[str, Fake], make_engine: MakeEngine) -> None:
    fake = fakes["aigne"]
    engine = make_engine(fake.entry(upstream_model="gpt-image-1", options={"response_format": "url"}))
    (image,) = await engine.generate(request(mode=Mode.EDIT, images=1))
    assert isinstance(image, GeneratedImage) and image.source_url and "/generated/" in image.source_url
    assert fake.control.posts()[0].body["image"].startswith("data:image/png;base64,")


async def test_aigne_needs_a_provider_url() -> None:
    from limner.engines.upstream.aigne import AigneEngine

    with pytest.raises(ValueError, match="needs a 'provider_url'"):
        AigneEngine(ModelEntry(id="hub", engine="aigne"))


async def test_imagineart_generation_is_multipart_and_reports_the_seed(
    fakes: dict[str, Fake], make_engine: MakeEngine
) -> None:
    fake = fakes["imagineart"]
    engine = make_engine(fake.entry())
    images = await engine.generate(request(n=2, size=(1536, 1024), effort="high"))
    assert [image.seed for image in images] == [7, 8]
    posts = fake.control.posts()
    assert all(post.headers["content-type"].startswith("multipart/form-data") for post in posts)
    assert {post.body["seed"] for post in posts} == {"7", "8"}
    assert posts[0].body | {"seed": "x"} == {
        "prompt": "a red fox in the snow",
        "aspect_ratio": "3:2",
        "resolution": "1K",
        "seed": "x",
        "reasoning": "high",
        "_files": 0,
    }


async def test_imagineart_edit_uploads_files(fakes: dict[str, Fake], make_engine: MakeEngine) -> None:
    fake = fakes["imagineart"]
    await make_engine(fake.entry()).generate(request(mode=Mode.COMPOSE, images=3, size=(2048, 2048)))
    (post,) = fake.control.posts()
    assert post.path == "/v1/images/edits" and post.body["_files"] == 3 and post.body["resolution"] == "2K"
    assert "reasoning" not in post.body


async def test_imagineart_model_not_available_is_not_retried(fakes: dict[str, Fake], make_engine: MakeEngine) -> None:
    fake = fakes["imagineart"]
    fake.control.set("unknown")
    with pytest.raises(ModelNotAvailable, match="HTTP 502"):
        await make_engine(fake.entry()).generate(request())
    assert len(fake.control.posts()) == 1
