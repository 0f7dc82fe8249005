"""Upscaler engines on their own: spandrel reads tiny ESRGAN files (``.pth`` and ``.safetensors``), a model of
another factor reaches the asked one, alpha survives, and files that are no upscaler are refused by name."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from limner.core.errors import ModelNotAvailable
from limner.core.models import EngineRequest, Mode
from limner.engines import spandrel_import
from limner.engines.upscaler import ModelUpscaler, UpscalerEngine, filter_upscale
from tests.support.images import pixel_at
from tests.support.tiny_diffusers import build_tiny_x4_upscaler
from tests.support.tiny_upscalers import write_upscaler


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("native", [2, 4])
def test_spandrel_reads_esrgan_files_of_either_factor(tmp_path: Path, suffix: str, native: int) -> None:
    model = ModelUpscaler(write_upscaler(tmp_path / f"m{suffix}", scale=native))
    model.load()
    assert model.native == native
    assert model.resident_bytes > 0
    for scale in (2, 4):
        assert model.upscale(Image.new("RGB", (10, 6), (90, 120, 30)), scale).size == (10 * scale, 6 * scale)


async def test_the_engine_upscales_and_keeps_alpha(tmp_path: Path) -> None:
    engine = UpscalerEngine(write_upscaler(tmp_path / "m.pth", scale=2))
    source = Image.new("RGBA", (8, 8), (200, 30, 30, 255))
    source.paste((0, 0, 0, 0), (0, 0, 8, 2))
    request = EngineRequest(Mode.UPSCALE, "", 32, 32, [0], images=[source], scale=4)
    (result,) = await engine.generate(request)
    assert result.image.size == (32, 32)
    assert result.image.mode == "RGBA"
    assert pixel_at(result.image, (16, 2))[3] == 0
    assert pixel_at(result.image, (16, 24))[3] == 255
    await engine.aclose()
    assert engine.resident_bytes == 0


def test_the_builtin_filter_sharpens_colour_and_not_alpha() -> None:
    source = Image.new("RGBA", (8, 8), (255, 255, 255, 128))
    source.paste((0, 0, 0, 128), (4, 0, 8, 8))
    larger = filter_upscale(source, 2)
    assert larger.size == (16, 16)
    assert set(larger.getchannel("A").getcolors() or ()) == {(256, 128)}  # alpha resampled, never sharpened
    assert pixel_at(larger.convert("RGB"), (6, 8))[0] == 255  # the unsharp mask's overshoot, clipped to white


def test_a_file_that_is_no_upscaler_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(ModelNotAvailable, match=r"Upscaler file other\.pth could not be loaded"):
        ModelUpscaler(path).load()


def test_a_file_of_another_kind_is_refused_by_its_suffix(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\0")
    with pytest.raises(ModelNotAvailable, match=r"model\.onnx is not one of \.pth, \.pt, \.ckpt, \.safetensors"):
        ModelUpscaler(path).load()


def test_spandrel_imports_without_leaving_a_stand_in_behind() -> None:
    library = spandrel_import.spandrel()
    assert library.ModelLoader is not None
    if spandrel_import.torchvision_imports():
        pytest.fail(
            "torchvision now imports beside this torch: delete limner/engines/spandrel_import.py and import "
            "spandrel directly"
        )
    assert not any(name.startswith("torchvision") for name in sys.modules)
    lama = sys.modules["spandrel.architectures.LaMa.__arch.LaMa"]
    with pytest.raises(RuntimeError, match="needs torchvision"):
        lama.rotate(torch.zeros(1), 0)


@pytest.mark.parametrize("scale", [2, 4])
async def test_diffusers_4x_upscaler_directory(tmp_path: Path, scale: int) -> None:
    engine = UpscalerEngine(build_tiny_x4_upscaler(tmp_path / "x4"), steps=2)
    source = Image.new("RGB", (12, 10), (30, 160, 60))  # not a multiple of 8: padded, then cut back
    request = EngineRequest(Mode.UPSCALE, "", 12 * scale, 10 * scale, [0], images=[source], scale=scale)
    (result,) = await engine.generate(request)
    assert (result.image.mode, result.image.size) == ("RGB", (12 * scale, 10 * scale))
    assert engine.resident_bytes > 0


def test_a_directory_that_is_no_upscaler_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    engine = UpscalerEngine(tmp_path / "empty")
    with pytest.raises(ModelNotAvailable, match="Upscaler directory empty could not be loaded"):
        engine.upscale(Image.new("RGB", (8, 8)), 2)
