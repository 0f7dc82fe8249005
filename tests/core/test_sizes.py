"""Size strings, aspect ratios and presets to pixel sizes, per model capabilities."""

from __future__ import annotations

import pytest
from PIL import Image

from limner.core.errors import InvalidRequest
from limner.core.models import Capabilities, SizeSpec
from limner.core.sizes import fit_to_size, input_pixels, parse_aspect_ratio, parse_size, resolve_size

SD = Capabilities(default_size=(512, 512), min_side=64, max_side=1024, size_multiple=8, max_pixels=1024 * 1024)
NATIVE = Capabilities(default_size=(1024, 1024), native_size=(32, 32))
DALLE2 = Capabilities(allowed_sizes=((256, 256), (512, 512), (1024, 1024)), default_size=(1024, 1024))


def test_parse_size() -> None:
    assert parse_size("1024x768") == (1024, 768)
    assert parse_size(" 64X32 ") == (64, 32)
    assert parse_size("auto") is None
    for bad in ("1024", "axb", "0x10", "-5x5", "1024x"):
        with pytest.raises(InvalidRequest) as caught:
            parse_size(bad)
        assert caught.value.param == "size"
        assert bad.strip() in caught.value.message or "positive" in caught.value.message


def test_aspect_ratio() -> None:
    assert parse_aspect_ratio("16:9") == pytest.approx(16 / 9)
    with pytest.raises(InvalidRequest, match="Invalid aspect ratio '16-9'"):
        parse_aspect_ratio("16-9")
    with pytest.raises(InvalidRequest):
        parse_aspect_ratio("0:1")


def test_explicit_sizes_in_bounds_snap_generation_to_the_multiple() -> None:
    plan = resolve_size(SizeSpec(500, 300), SD)
    assert plan.output == (500, 300)
    assert plan.generate == (496, 296)


def test_explicit_sizes_out_of_bounds_say_what_is_allowed() -> None:
    with pytest.raises(InvalidRequest) as caught:
        resolve_size(SizeSpec(2048, 2048), SD)
    assert "between 64 and 1024" in caught.value.message
    with pytest.raises(InvalidRequest) as dalle:
        resolve_size(SizeSpec(640, 480), DALLE2)
    assert "Supported sizes: 256x256, 512x512, 1024x1024" in dalle.value.message


def test_default_and_presets() -> None:
    assert resolve_size(SizeSpec(), SD).output == (512, 512)
    wide = resolve_size(SizeSpec(aspect_ratio="16:9", resolution="1K"), SD)
    assert wide.output[0] > wide.output[1]
    assert wide.output[0] % 8 == 0 and wide.output[1] % 8 == 0
    assert wide.output[0] * wide.output[1] <= SD.max_pixels and max(wide.output) <= SD.max_side
    two_k = resolve_size(SizeSpec(aspect_ratio="1:1", resolution="2K"), NATIVE)
    assert two_k.output == (2048, 2048) and two_k.generate == (32, 32)
    assert resolve_size(SizeSpec(aspect_ratio="16:9"), DALLE2).output == (1024, 1024)


def test_auto_aspect_ratio_follows_the_first_image() -> None:
    source = Image.new("RGB", (300, 100))
    plan = resolve_size(SizeSpec(aspect_ratio="auto", resolution="1K"), SD, first_image=source)
    assert plan.output[0] / plan.output[1] == pytest.approx(3, rel=0.05)


GPT_IMAGE = Capabilities(allowed_sizes=((1024, 1024), (1536, 1024), (1024, 1536)), default_size=(1024, 1024))


@pytest.mark.parametrize("caps", [SD, NATIVE, GPT_IMAGE], ids=["any-size", "native-size", "fixed-sizes"])
def test_size_auto_with_a_portrait_input_is_a_portrait(caps: Capabilities) -> None:
    """``size: "auto"`` follows the input's shape on every kind of model, not only free-size ones."""
    portrait = Image.new("RGB", (600, 900))
    plan = resolve_size(SizeSpec(), caps, first_image=portrait)
    width, height = plan.output
    assert height > width, plan
    assert resolve_size(SizeSpec(), caps).output == caps.default_size, "no input: the model's default"


def test_input_pixels_bound_inputs_by_the_generation_area() -> None:
    assert input_pixels(resolve_size(SizeSpec(1024, 1024), SD)) == 4 * 1024 * 1024
    assert input_pixels(resolve_size(SizeSpec(), NATIVE)) == 512 * 512, "a small native size keeps a floor"


def test_fit_to_size_pads_then_scales_without_cropping() -> None:
    square = Image.new("RGB", (32, 32), (255, 0, 0))
    wide = fit_to_size(square, 128, 64)
    assert wide.size == (128, 64)
    assert wide.getpixel((2, 32)) == (255, 255, 255), "padding on the sides"
    assert wide.getpixel((64, 32)) == (255, 0, 0), "the picture in the middle"
    assert fit_to_size(square, 32, 32) is square
