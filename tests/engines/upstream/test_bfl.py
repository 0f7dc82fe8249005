"""The Black Forest Labs engine: submit, poll, download, and every task status."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from limner.core.errors import ModelError, Timeout
from limner.core.models import GeneratedImage, Mode
from limner.engines.catalog import ModelEntry
from limner.engines.upstream.base import UpstreamEngine
from limner.engines.upstream.bfl import BflEngine
from tests.engines.upstream.conftest import Fake, request
from tests.engines.upstream.fakes.common import KEY

MakeEngine = Callable[[ModelEntry], UpstreamEngine]


async def test_kontext_submit_poll_download(fakes: dict[str, Fake], make_engine: MakeEngine) -> None:
    fake = fakes["bfl"]
    engine = make_engine(fake.entry())
    images = await engine.generate(request(n=2, size=(1344, 768)))
    assert [image.seed for image in images] == [7, 8]
    assert all(isinstance(image, GeneratedImage) and "/delivery/" in (image.source_url or "") for image in images)
    assert images[0].image.size == (64, 36)
    posts = fake.control.posts()
    assert {post.body["seed"] for post in posts} == {7, 8}
    assert all(post.path == "/v1/flux-kontext-max" and post.headers["x-key"] == KEY for post in posts)
    assert all(post.body["aspect_ratio"] == "16:9" and post.body["output_format"] == "png" for post in posts)
    polls = [seen for seen in fake.control.requests if seen.path == "/v1/get_result"]
    assert len(polls) == 4 and all(poll.headers["x-key"] == KEY for poll in polls)
    assert engine.calls[-1].requests == 2 + 4 + 2


async def test_kontext_edit_sends_input_images(fakes: dict[str, Fake], make_engine: MakeEngine) -> None:
    fake = fakes["bfl"]
    await make_engine(fake.entry()).generate(request(mode=Mode.COMPOSE, images=2))
    body = fake.control.posts()[0].body
    assert body["input_image"] and body["input_image_2"] and "input_image_3" not in body


async def test_pro_takes_width_and_height_in_multiples_of_32(fakes: dict[str, Fake], make_engine: MakeEngine) -> None:
    fake = fakes["bfl"]
    engine = make_engine(fake.entry(upstream_model="flux-pro-1.1"))
    assert engine.capabilities.modes == frozenset({Mode.GENERATE})
    await engine.generate(request(size=(1000, 700)))
    body = fake.control.posts()[0].body
    assert (body["width"], body["height"]) == (992, 672) and "aspect_ratio" not in body


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ("moderated", "moderated the request"),
        ("content-moderated", "moderated the generated image"),
        ("error", "failed to generate"),
        ("lost", "lost the task"),
    ],
)
async def test_failed_statuses(fakes: dict[str, Fake], make_engine: MakeEngine, fault: str, words: str) -> None:
    fake = fakes["bfl"]
    fake.control.set(fault)
    with pytest.raises(ModelError, match=words):
        await make_engine(fake.entry()).generate(request())


async def test_polling_gives_up_at_the_timeout(fakes: dict[str, Fake], make_engine: MakeEngine) -> None:
    fake = fakes["bfl"]
    fake.control.set("pending")
    with pytest.raises(Timeout, match=r"did not finish within 0\.3 s"):
        await make_engine(fake.entry(timeout=0.3, options={"poll_interval": 0.05})).generate(request())


def test_the_key_goes_to_regional_hosts_of_the_provider_only() -> None:
    engine = BflEngine(ModelEntry(id="flux", engine="bfl"))
    assert engine.trusts("https://api.bfl.ai/v1/get_result?id=1")
    assert engine.trusts("https://api.us1.bfl.ai/v1/get_result?id=1")
    assert engine.trusts("https://api.eu.bfl.ai/v1/get_result?id=1")
    assert not engine.trusts("http://api.us1.bfl.ai/v1/get_result?id=1")
    assert not engine.trusts("https://bfl.ai.evil.example/v1/get_result")
    assert not engine.trusts("https://evil.example/?bfl.ai")
    local = BflEngine(ModelEntry(id="flux", engine="bfl", provider_url="http://127.0.0.1:9"))
    assert not local.trusts("http://0.0.1:9/x") and local.trusts("http://127.0.0.1:9/x")
