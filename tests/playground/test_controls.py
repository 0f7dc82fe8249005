"""Control and reference images in the playground: offered only for models that have them, sent with the
page's own request (the picture changes), and shown in "Show the request" as programs that run unchanged."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers / huggingface_hub read it

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from limner.config.defaults import BUILTIN_MODEL_ID, default_models
from limner.engines.catalog import ControlEntry, ModelEntry, ReferenceEntry
from limner.settings import Settings
from tests.playground.pages import decode, png, run_and_wait
from tests.playground.test_show_request import require_tools, run_all, show
from tests.support.browser import Tab
from tests.support.live_server import live_server

MODEL = "tiny-sdxl"


@pytest.fixture(scope="module")
def guided_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The built-in model plus a tiny SDXL model with a canny ControlNet and an IP-Adapter."""
    import torch

    from limner.app import create_app
    from tests.support.tiny_controls import build_tiny_controlnet, build_tiny_ip_adapter
    from tests.support.tiny_families import build_tiny_sdxl

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("guided")
    sdxl = build_tiny_sdxl(root / "sdxl")
    ip, encoder = build_tiny_ip_adapter(sdxl, root / "ip")
    tiny = ModelEntry(
        id=MODEL,
        engine="diffusers",
        path=sdxl,
        device="cpu",
        default_steps=2,
        controls=[ControlEntry(name="canny", path=build_tiny_controlnet(sdxl, root / "canny"), kind="canny")],
        ip_adapter=ReferenceEntry(path=ip, image_encoder=encoder),
    )
    settings = Settings(data_dir=root / "data", models=[*default_models(), tiny], default_model=BUILTIN_MODEL_ID)
    with live_server(create_app(settings)) as url:
        yield url
    torch.set_num_threads(threads)


def circle() -> bytes:
    image = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(image).ellipse((12, 12, 52, 52), fill="white")
    return png(image)


def photo() -> bytes:
    image = Image.new("RGB", (64, 64), (40, 90, 200))
    ImageDraw.Draw(image).rectangle((8, 30, 56, 60), fill=(230, 180, 40))
    return png(image)


def choose(tab: Tab, selector: str, name: str, data: bytes) -> None:
    from playwright.sync_api import FilePayload

    tab.page.set_input_files(selector, files=[FilePayload(name=name, mimeType="image/png", buffer=data)])


def last_result(tab: Tab) -> np.ndarray:
    return np.asarray(decode(tab.image(".card img")), dtype=np.int16)


def test_controls_and_references_in_the_page(
    playground: Callable[..., Tab], guided_server: str, tmp_path: Path
) -> None:
    require_tools()
    tab = playground(guided_server)
    page = tab.page
    assert page.is_hidden("#guides"), "the built-in model has no controls: nothing to offer"
    page.select_option("#model", MODEL)
    page.wait_for_selector("#guides", state="visible")
    page.fill("#prompt", "a fox")
    page.fill("#seed", "7")
    page.select_option("#size", "256x256")
    assert run_and_wait(tab) == "done"
    plain = last_result(tab)

    page.click("#guides summary")
    page.select_option("#control-name", "canny")
    choose(tab, "#control-file", "circle.png", circle())
    assert run_and_wait(tab) == "done"
    steered = last_result(tab)
    assert np.abs(steered - plain).mean() > 1, "the control image reached the model"

    choose(tab, "#reference-file", "photo.png", photo())
    page.fill("#reference-scale", "0.8")
    page.click("#show-request")
    page.wait_for_selector("#request-dialog[open]")
    programs = [show(tab, dialect, language) for dialect in ("openai", "aigne") for language in ("curl", "python")]
    programs.append(show(tab, "milady", "javascript"))
    assert '"controls"' in programs[0].code and "base64 < control.png" in programs[0].code
    assert 'data_url("reference.png")' in programs[1].code
    show(tab, "imagineart", "curl")
    assert "JSON string fields (controls, reference_images)" in (page.text_content("#request-notes") or "")
    tab.assert_clean()

    files = {"control.png": circle(), "reference.png": photo()}
    for outcome in run_all(programs, tmp_path, files, token=""):
        what = f"{outcome.program.dialect}/{outcome.program.language}"
        assert outcome.returncode == 0, f"{what}:\n{outcome.program.code}\n{outcome.stdout}\n{outcome.stderr}"
        assert len(outcome.images) == 1, what
