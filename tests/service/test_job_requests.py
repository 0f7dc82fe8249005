"""An async job's stored request (``limner.service.job_requests``): what a dialect translated comes back whole,
input bytes, URLs and limner's own media included, with the dialect's ``Answer``; a form it cannot read
is refused rather than misread."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from limner.core.answer import Answer
from limner.core.models import (
    ControlChoice,
    EncodedImage,
    Expand,
    ImageRequest,
    LoraChoice,
    MediaRef,
    ReferenceChoice,
    SizeSpec,
    SourceImage,
    UpscaleChoice,
)
from limner.service import job_requests

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


def edit_request() -> ImageRequest:
    return ImageRequest(
        prompt="a cat in a hat",
        model="dall-e-2",
        dialect="openai",
        n=2,
        size=SizeSpec(aspect_ratio="16:9", resolution="2K"),
        negative_prompt="blur",
        seed=7,
        steps=12,
        guidance=4.5,
        strength=0.6,
        images=[
            EncodedImage(PNG, "image 1", "image"),
            EncodedImage("https://example.com/b.png", "image 2", "image"),
            EncodedImage(MediaRef("alice", "images/abc.png"), "image 3", "image"),
        ],
        mask=EncodedImage(PNG[::-1], "mask", "mask"),
        output_format="webp",
        output_compression=80,
        background="transparent",
        quality="high",
        rendering_style="natural",
        effort="high",
        consumer="alice",
        partial_images=2,
        report_usage=True,
        permanent_links=True,
        loras=[LoraChoice("ink", 0.7), LoraChoice("grain")],
        scheduler="euler",
        exact=True,
        priority=3,
        start_deadline=2.5,
        controls=[
            ControlChoice("edges", EncodedImage(PNG, "controls[0].image", "controls"), 0.8, 0.1, 0.9, "canny"),
            ControlChoice("depth", EncodedImage("https://example.com/d.png", "controls[1].image", "controls")),
        ],
        reference_images=[ReferenceChoice(EncodedImage(PNG[1:], "reference_images[0]", "reference_images"), 0.5)],
        upscale=UpscaleChoice("esrgan", 4, 0.3),
        expand=Expand(left=64, right=32, aspect_ratio=None),
    )


def test_a_request_comes_back_as_it_was_translated() -> None:
    request = edit_request()
    answer = Answer("openai", "edit", stream=True, response_format="url", model="gpt-image-1",
                    base_url="https://img.example.com", consumer="alice", safety_identifier="u-1")  # fmt: skip
    stored = job_requests.stored("POST", "/v1/images/edits", "a=1", (request, answer))
    assert (stored.method, stored.path, stored.query) == ("POST", "/v1/images/edits", "a=1")
    assert job_requests.load(stored.request) == request
    assert job_requests.load_answer(stored.answer) == answer
    first = job_requests.load(stored.request).images[0]
    assert isinstance(first, EncodedImage) and first.source == PNG  # the file bytes, exactly


def test_a_synchronous_row_keeps_no_request() -> None:
    stored = job_requests.stored("POST", "/v1/images/generations", "")
    assert (stored.request, stored.answer) == (b"", "")


def test_a_decoded_image_cannot_be_queued() -> None:
    request = ImageRequest(prompt="x", model="m", images=[SourceImage(Image.new("RGB", (8, 8)), "image 1")])
    with pytest.raises(job_requests.NotQueueable, match="image 1 is already decoded"):
        job_requests.dump(request)


def test_another_stored_form_is_refused_not_misread() -> None:
    stored = json.loads(job_requests.dump(ImageRequest(prompt="x", model="m")))
    stored["version"] = job_requests.VERSION + 1
    with pytest.raises(ValueError, match="in a form this server does not read"):
        job_requests.load(json.dumps(stored).encode())
    with pytest.raises(ValueError):
        job_requests.load(b'{"method": "POST", "headers": []}')  # an HTTP request as jobs kept them before
