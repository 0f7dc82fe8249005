"""The reference services' own example code, run as written against a live limner on 127.0.0.1.

Each file in ``reference/`` is a snippet transcribed from ``shared/seeds/*.txt`` (line breaks restored, nothing
else changed). Before running one, this module changes only:

- the host: ``https://api.ai.ml``, ``https://cloud.milady.ai`` and ``https://api.ml.imagine.art``
  become the test server's URL; tokens come from ``AIML_API_KEY`` / ``IMAGINEART_TOKEN``, which the
  snippets read themselves (Milady's curl lines keep their literal ``YOUR_API_KEY``);
- AI.ML's *source image* URLs (``https://example.com/...``, ``https://google.com/sample_N.png``) become
  a loopback server this module runs, so the limner server is started with ``fetch_allow_private``;
- placeholders the references leave to the reader: ImagineArt's generate/edit snippets use ``token``
  without defining it (a one-line preamble defines it from ``IMAGINEART_TOKEN``, as its auth snippet
  does), and Milady's image-to-image ``sourceImage`` is an elided ``iVBORw0KGgo...`` (completed to a
  real PNG);
- snippets that only fetch and never print get one line appended that prints what they received,
  so the test can check it;
- in one test, the curl edit snippet's two file names become ``portrait.webp`` and ``reference.heic``
  (formats the reference accepts, which curl labels ``application/octet-stream``).

The JavaScript snippets run with ``node``; AI.ML's import ``node-fetch``, installed from npm into
``tests/examples/node_modules`` (``package.json`` here) by ``make test`` or, failing that, by this module.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pillow_heif
import pytest
from PIL import Image

from limner.app import create_app
from limner.engines.catalog import ModelEntry
from limner.settings import Settings
from tests.conftest import pattern_models
from tests.support.fakes import SingleInputEngine, factories
from tests.support.file_server import file_server
from tests.support.live_server import live_server

HERE = Path(__file__).parent
SNIPPETS = HERE / "reference"
HOSTS = ("https://api.ai.ml", "https://cloud.milady.ai", "https://api.ml.imagine.art")
SOURCE_HOSTS = ("https://example.com", "https://google.com")
ELIDED_PNG = "iVBORw0KGgoAAAANSUhEUgAA..."
TOKEN_PREAMBLE = {
    ".py": 'import os\ntoken = os.environ["IMAGINEART_TOKEN"]\n',
    ".mjs": "const token = process.env.IMAGINEART_TOKEN;\n",
}
PRINT_RESPONSE = {
    "imagineart_models.py": "\nprint(r.text)\n",
    "imagineart_models.mjs": "\nconsole.log(JSON.stringify(await res.json()));\n",
    "milady_img2img.mjs": "\nconsole.log(JSON.stringify(await response.json()));\n",
}


def png(color: tuple[int, int, int], size: tuple[int, int], fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


def decode(path: Path) -> Image.Image:
    image = Image.open(path)
    image.load()
    return image


@pytest.fixture(scope="session")
def node_fetch() -> None:
    """``node-fetch`` in ``tests/examples/node_modules``: installed from npm when missing (idempotent)."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    if (HERE / "node_modules" / "node-fetch" / "package.json").exists():
        return
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed, so node-fetch cannot be")
    done = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund"], cwd=HERE, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        pytest.skip(f"npm install failed: {done.stderr[-500:]}")


@pytest.fixture(scope="module")
def sources() -> Iterator[str]:
    with file_server(
        {
            "/source_image.png": (png((230, 230, 240), (300, 200)), "image/png"),
            "/sample_1.png": (png((220, 40, 40), (160, 120)), "image/png"),
            "/sample_2.png": (png((40, 40, 220), (100, 100)), "image/png"),
        }
    ) as base:
        yield base


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("data"),
        models=pattern_models(),
        default_model="pattern",
        fetch_allow_private=True,
    )
    with live_server(create_app(settings)) as url:
        yield url


@dataclass
class Run:
    cwd: Path
    stdout: str

    def image(self, name: str) -> Image.Image:
        return decode(self.cwd / name)

    def json(self) -> dict:
        return json.loads(self.stdout)


def run_example(
    name: str, server: str, workdir: Path, sources: str = "", *, renamed: dict[str, str] | None = None, **env: str
) -> Run:
    """Run one snippet; ``renamed`` swaps file names in it (the same curl line with other formats)."""
    source = (SNIPPETS / name).read_text()
    for old, new in (renamed or {}).items():
        source = source.replace(old, new)
    for host in HOSTS:
        source = source.replace(host, server)
    for host in SOURCE_HOSTS:
        source = source.replace(host, sources)
    source = source.replace(ELIDED_PNG, base64.b64encode(png((90, 160, 90), (48, 48))).decode())
    suffix = Path(name).suffix
    uses_token = "{token}" in source  # also matches JavaScript's ${token}
    if uses_token and "const token" not in source and "token =" not in source:
        source = TOKEN_PREAMBLE[suffix] + source
    source += PRINT_RESPONSE.get(name, "")
    script = workdir / name
    script.write_text(source)
    if suffix == ".mjs" and (HERE / "node_modules").exists():
        (workdir / "node_modules").symlink_to(HERE / "node_modules")
    command = {".mjs": ["node"], ".py": [sys.executable], ".sh": ["bash"]}[suffix] + [str(script)]
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", str(workdir)),
        "NO_PROXY": "127.0.0.1,localhost",
        "IMAGINEART_TOKEN": "limner-test-token",
        "AIML_API_KEY": "limner-test-key",
        **env,
    }
    done = subprocess.run(command, cwd=workdir, env=environment, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    return Run(workdir, done.stdout)


# --- AI.ML (node-fetch) ------------------------------------------------------------------------------------


def test_aiml_generate(node_fetch: None, server: str, tmp_path: Path) -> None:
    run = run_example("aiml_generate.mjs", server, tmp_path)
    assert run.stdout.strip() == "Saved image.png"
    image = run.image("image.png")
    assert (image.format, image.size) == ("PNG", (2048, 2048))


@pytest.mark.parametrize("response_format", ["url", "presigned_url", "b64_json"])
def test_aiml_edit(node_fetch: None, server: str, sources: str, tmp_path: Path, response_format: str) -> None:
    run = run_example("aiml_edit.mjs", server, tmp_path, sources, RESPONSE_FORMAT=response_format)
    assert run.stdout.startswith("Saved image.png")
    image = run.image("image.png")
    assert (image.format, image.size) == ("PNG", (2508, 1672)), "2K at the source image's 3:2"


def test_aiml_compose(node_fetch: None, server: str, sources: str, tmp_path: Path) -> None:
    run = run_example("aiml_compose.mjs", server, tmp_path, sources)
    image = run.image("image.png")
    assert (image.format, image.size) == ("PNG", (2365, 1774)), "2K at image 1's 4:3"


# --- Milady (curl, Node's fetch) ----------------------------------------------------------------------------


def check_milady(payload: dict, count: int, size: tuple[int, int]) -> None:
    assert payload["numImages"] == count == len(payload["images"])
    for item in payload["images"]:
        data = httpx.get(item["url"]).content
        assert (item["mimeType"], item["fileSize"]) == ("image/png", len(data))
        image = Image.open(io.BytesIO(data))
        assert (image.format, image.size) == ("PNG", size)


def test_milady_generate_curl(server: str, tmp_path: Path) -> None:
    check_milady(run_example("milady_generate.sh", server, tmp_path).json(), 1, (1024, 1024))


def test_milady_batch_curl(server: str, tmp_path: Path) -> None:
    check_milady(run_example("milady_batch.sh", server, tmp_path).json(), 4, (1365, 768))


def test_milady_image_to_image_node(server: str, tmp_path: Path) -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    check_milady(run_example("milady_img2img.mjs", server, tmp_path).json(), 1, (1024, 1024))


# --- ImagineArt (curl, httpx, Node's fetch and FormData) -----------------------------------------------------


@pytest.fixture
def references(tmp_path: Path) -> Path:
    """The files the edit snippets read from their working directory."""
    (tmp_path / "portrait.jpg").write_bytes(png((200, 160, 130), (96, 128), "JPEG"))
    (tmp_path / "reference.png").write_bytes(png((30, 90, 200), (64, 64)))
    return tmp_path


def needs(suffix: str) -> None:
    if suffix == ".mjs" and shutil.which("node") is None:
        pytest.skip("node is not installed")
    if suffix == ".sh" and shutil.which("curl") is None:
        pytest.skip("curl is not installed")


@pytest.mark.parametrize("suffix", [".sh", ".py", ".mjs"])
def test_imagineart_models(server: str, tmp_path: Path, suffix: str) -> None:
    needs(suffix)
    payload = run_example(f"imagineart_models{suffix}", server, tmp_path).json()
    items = {item["id"]: item for item in payload["data"]}
    assert items["text-to-image"]["modality"] == "text-to-image"
    assert items["image-edit"]["modality"] == "image-to-image"
    assert "aspect_ratio" in items["image-edit"]["parameters"]["properties"]


@pytest.mark.parametrize("suffix", [".sh", ".py", ".mjs"])
def test_imagineart_generate(server: str, tmp_path: Path, suffix: str) -> None:
    needs(suffix)
    image = run_example(f"imagineart_generate{suffix}", server, tmp_path).image("image.png")
    assert (image.format, image.size) == ("PNG", (2508, 1672)), "3:2 at 2K"


@pytest.mark.parametrize("suffix", [".sh", ".py", ".mjs"])
def test_imagineart_edit(server: str, references: Path, suffix: str) -> None:
    needs(suffix)
    image = run_example(f"imagineart_edit{suffix}", server, references).image("edited.png")
    assert (image.format, image.size) == ("PNG", (1774, 2365)), "auto: portrait.jpg's 3:4 at 2K"


@pytest.fixture(scope="module")
def one_image_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """ImagineArt's edit model served by an engine that takes one image: several are laid out side by side."""
    entry = ModelEntry(id="single", engine="single", aliases=["image-edit"], compose="layout")
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), models=[entry], default_model="single")
    with live_server(create_app(settings, factories=factories(single=lambda e: SingleInputEngine()))) as url:
        yield url


PORTRAIT_AT_2K = (1448, 2896)
"""``auto`` at 2K for the reference example's 300x600 portrait: 1:2, about four megapixels."""


@pytest.mark.parametrize("suffix", [".sh", ".py", ".mjs"])
def test_imagineart_edit_auto_follows_the_first_image(one_image_server: str, tmp_path: Path, suffix: str) -> None:
    """The reference's example with a 300x600 portrait first and a landscape reference second: portrait."""
    needs(suffix)
    (tmp_path / "portrait.jpg").write_bytes(png((200, 160, 130), (300, 600), "JPEG"))
    (tmp_path / "reference.png").write_bytes(png((30, 90, 200), (640, 360)))
    image = run_example(f"imagineart_edit{suffix}", one_image_server, tmp_path).image("edited.png")
    assert (image.format, image.size) == ("PNG", PORTRAIT_AT_2K)


def test_imagineart_edit_curl_with_webp_and_heic(server: str, tmp_path: Path) -> None:
    """curl labels .webp and .heic parts application/octet-stream: the bytes say what they are."""
    needs(".sh")
    pillow_heif.register_heif_opener()
    (tmp_path / "portrait.webp").write_bytes(png((200, 160, 130), (300, 600), "WEBP"))
    (tmp_path / "reference.heic").write_bytes(png((30, 90, 200), (640, 360), "HEIF"))
    renamed = {"portrait.jpg": "portrait.webp", "reference.png": "reference.heic"}
    image = run_example("imagineart_edit.sh", server, tmp_path, renamed=renamed).image("edited.png")
    assert (image.format, image.size) == ("PNG", PORTRAIT_AT_2K)
