"""The invisible watermark round-trips through PNG and limner's own JPEG, and what destroys it is what the
module's docstring says: a 4:2:0 JPEG re-encode (for ``dwtDct``), a 0.5x resize, a crop (for both).

The picture is a photograph that matplotlib ships (a flat test card would be too easy or too hard)."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image

from limner.media.encode import encode_image
from limner.media.watermark import InvisibleWatermark, Method, WatermarkError

pytest.importorskip("imwatermark", reason="the invisible watermark needs limner[watermark]")

PHOTO = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    with Image.open(PHOTO) as image:
        return image.convert("RGB")  # 512x600


def reopen(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def saved(image: Image.Image, fmt: str, **options: object) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return reopen(buffer.getvalue())


def limner_png(image: Image.Image) -> Image.Image:
    return reopen(encode_image(image, "png")[0])


def limner_jpeg(image: Image.Image) -> Image.Image:
    """As the finish stage encodes while the mark is on: limner's quality (90), full-resolution colour."""
    return reopen(encode_image(image, "jpeg", full_chroma=True)[0])


def reencoded_75(image: Image.Image) -> Image.Image:
    """What a site that recompresses uploads does: JPEG quality 75, colour halved both ways (4:2:0)."""
    return saved(limner_jpeg(image), "JPEG", quality=75)


def halved(image: Image.Image) -> Image.Image:
    return limner_jpeg(image).resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS)


def cropped(image: Image.Image) -> Image.Image:
    return image.crop((8, 8, image.width - 4, image.height - 4))


SURVIVES: list[tuple[Method, Callable[[Image.Image], Image.Image], bool]] = [
    ("dwtDct", limner_png, True),
    ("dwtDct", limner_jpeg, True),
    ("dwtDct", reencoded_75, False),
    ("dwtDct", halved, False),
    ("dwtDct", cropped, False),
    ("dwtDctSvd", limner_jpeg, True),
    ("dwtDctSvd", reencoded_75, True),
    ("dwtDctSvd", halved, False),
]


@pytest.mark.parametrize(("method", "change", "survives"), SURVIVES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_what_the_mark_survives(
    photo: Image.Image, method: Method, change: Callable[[Image.Image], Image.Image], survives: bool
) -> None:
    mark = InvisibleWatermark("limner", method)
    marked = mark.apply(photo)
    detection = mark.detect(change(marked))
    assert detection.found is survives, detection
    if survives:
        assert detection.matching >= 44, detection  # nine bits in ten or more, not a lucky threshold
    else:
        assert detection.matching <= 36, detection  # about what an unmarked image reads


def test_an_unmarked_image_reads_as_unmarked(photo: Image.Image) -> None:
    for method in ("dwtDct", "dwtDctSvd"):
        detection = InvisibleWatermark("limner", method).detect(photo)  # type: ignore[arg-type]
        assert detection.readable and not detection.found and detection.matching <= 36, detection


def test_the_payload_is_the_operators(photo: Image.Image) -> None:
    ours = InvisibleWatermark("acme-images-01")
    marked = limner_jpeg(ours.apply(photo))
    assert ours.detect(marked).found and ours.detect(marked).bits == 14 * 8
    assert not InvisibleWatermark("limner").detect(marked).found


def test_the_mark_is_invisible_and_keeps_alpha(photo: Image.Image) -> None:
    rgba = photo.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
    marked = InvisibleWatermark().apply(rgba)
    assert marked.mode == "RGBA" and marked.getchannel("A").tobytes() == rgba.getchannel("A").tobytes()
    difference = np.asarray(marked.convert("RGB"), float) - np.asarray(photo, float)
    psnr = 10 * np.log10(255**2 / float((difference**2).mean()))
    assert psnr > 35, psnr  # a change nobody sees, but a change: the pixels differ
    assert InvisibleWatermark().detect(marked).found


def test_an_image_under_256x256_is_left_alone(photo: Image.Image) -> None:
    small = photo.resize((255, 256))
    mark = InvisibleWatermark()
    assert mark.apply(small) is small
    detection = mark.detect(small)
    assert not detection.readable and not detection.found


@pytest.mark.parametrize(
    ("payload", "method", "message"),
    [
        ("", "dwtDct", "payload must be 1 to 16 bytes of UTF-8, not 0"),
        ("x" * 17, "dwtDct", "payload must be 1 to 16 bytes of UTF-8, not 17"),
        ("limner", "rivaGan", "unknown invisible watermark method 'rivaGan'; use one of dwtDct, dwtDctSvd"),
    ],
)
def test_a_bad_configuration_says_what_to_change(payload: str, method: str, message: str) -> None:
    with pytest.raises(WatermarkError, match=message):
        InvisibleWatermark(payload, method)  # type: ignore[arg-type]


def test_without_the_package_it_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "imwatermark", None)  # what ``import`` sees when it is not installed
    with pytest.raises(
        WatermarkError, match=r"needs the invisible-watermark package: pip install 'limner\[watermark\]'"
    ):
        InvisibleWatermark()
