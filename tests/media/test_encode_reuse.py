"""A provider's PNG delivered as it came, with limner's metadata added: the same pixels as re-encoding,
and only when re-encoding would not have changed anything a client can decode."""

from __future__ import annotations

import gc
import io

import pytest
from PIL import Image

from limner.core.errors import InvalidRequest
from limner.media.encode import encode_image, read_png_text, remember_source, reuse_png, source_of


def png(image: Image.Image, **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **save)
    return buffer.getvalue()


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def gradient(mode: str = "RGB", size: tuple[int, int] = (48, 32)) -> Image.Image:
    image = Image.new("RGBA", size)
    image.putdata([((x * 5) % 256, (y * 7) % 256, 90, 128) for y in range(size[1]) for x in range(size[0])])
    return image.convert(mode)


METADATA = {"Software": "limner", "prompt": "a lighthouse at dusk, 夕暮れ", "seed": "7"}


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_reused_bytes_decode_like_a_fresh_encoding_with_the_metadata(mode: str) -> None:
    source = png(gradient(mode))
    image = decoded(source)
    reused = reuse_png(image, source, metadata=METADATA)
    assert reused is not None and reused.endswith(source[-12:]), "the provider's IDAT and IEND, untouched"
    fresh, mime = encode_image(image, "png", metadata=METADATA)
    assert mime == "image/png"
    again, expected = decoded(reused), decoded(fresh)
    assert (again.mode, again.size) == (expected.mode, expected.size) == (mode, (48, 32))
    assert again.tobytes() == expected.tobytes() == image.tobytes()
    assert read_png_text(reused) == read_png_text(fresh) == METADATA


def test_without_metadata_the_bytes_are_the_provider_s() -> None:
    source = png(gradient())
    assert reuse_png(decoded(source), source) == source


@pytest.mark.parametrize(
    ("image", "save", "background"),
    [
        (gradient().convert("P"), {}, None),  # a palette: re-encoding delivers RGB
        (gradient(), {"dpi": (72, 72)}, None),  # pHYs: any ancillary chunk is re-encoded
        (gradient(), {"optimize": False, "icc_profile": b"\0" * 128}, None),
        (gradient("RGBA"), {}, "opaque"),  # alpha that the background flattens
        (gradient("RGBA"), {}, "#202020"),
        (gradient("L"), {}, None),  # grey
        (gradient(), {"bits": 8, "transparency": (0, 0, 90)}, None),  # tRNS: a transparent colour
    ],
)
def test_anything_a_fresh_encoding_would_change_is_encoded_again(
    image: Image.Image, save: dict[str, object], background: str | None
) -> None:
    source = png(image, **save)
    assert reuse_png(decoded(source), source, background=background) is None


def test_bytes_that_do_not_describe_the_image_are_not_reused() -> None:
    source = png(gradient())
    assert reuse_png(decoded(source).resize((24, 16)), source) is None
    assert reuse_png(decoded(source).convert("RGBA"), source) is None
    assert reuse_png(decoded(source), source[:-4] + b"\0\0\0\0") is None, "a bad CRC"
    assert reuse_png(decoded(source), source + b"trailing") is None
    assert reuse_png(decoded(source), source.replace(b"IDAT", b"IDAt")) is None, "an unknown chunk"
    jpeg = io.BytesIO()
    gradient().save(jpeg, "JPEG")
    assert reuse_png(gradient(), jpeg.getvalue()) is None


def test_a_background_encode_image_refuses_is_refused_here_too() -> None:
    source = png(gradient())
    with pytest.raises(InvalidRequest) as caught:
        reuse_png(decoded(source), source, background="not-a-colour")
    assert caught.value.param == "background"


def test_the_source_is_remembered_for_that_image_object_only_while_it_lives() -> None:
    source = png(gradient())
    image = decoded(source)
    remember_source(image, source)
    assert source_of(image) == source
    assert source_of(image.copy()) is None and source_of(image.resize((8, 8))) is None
    del image
    gc.collect()
    assert all(value is not source for value in _remembered())


def _remembered() -> list[bytes]:
    from limner.media import encode

    return list(encode._sources.values())
