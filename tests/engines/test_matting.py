"""The ONNX matting model on its own: its foreground map becomes alpha at the image's size, whether the file
fixes its input size or leaves it open; a file onnxruntime cannot read is refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from limner.core.errors import ModelNotAvailable
from limner.engines.matting import Matting
from tests.support.tiny_matting import write_matting


def bright_square(size: tuple[int, int] = (96, 64)) -> Image.Image:
    image = Image.new("RGB", size, (10, 10, 10))
    image.paste((250, 250, 250), (32, 16, 64, 48))
    return image


@pytest.mark.parametrize("fixed", [None, 32])
def test_the_foreground_map_becomes_alpha(tmp_path: Path, fixed: int | None) -> None:
    matting = Matting(write_matting(tmp_path / "m.onnx", fixed), size=64)
    cut = matting.cut_out(bright_square())
    assert (cut.mode, cut.size) == ("RGBA", (96, 64))
    assert cut.getpixel((48, 32)) == (250, 250, 250, 255)  # the shape: opaque, its colour as painted
    assert cut.getpixel((5, 5)) == (10, 10, 10, 0)  # the ground: transparent
    assert matting.input_size(matting.load()) == ((32, 32) if fixed else (64, 64))


def test_a_file_onnxruntime_cannot_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(ModelNotAvailable, match=r"Matting model broken\.onnx could not be loaded"):
        Matting(path).cut_out(bright_square())
