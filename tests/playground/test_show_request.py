""" "Show the request": every program the page shows is run, unchanged, against the server it came from.

The server requires tokens, so each program must also carry the token the way it says it does (from
``LIMNER_TOKEN``). Programs run in parallel, each in its own folder holding the files it names; each must
leave an image on disk or print a link that downloads one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.playground.conftest import Locked
from tests.playground.pages import decode, two_colours, upload
from tests.support.browser import Tab

DIALECTS = ("openai", "aigne", "aiml", "milady", "imagineart")
LANGUAGES = ("curl", "python", "javascript")
RUNNERS = {
    "curl": ("bash", "request.sh"),
    "python": (sys.executable, "request.py"),
    "javascript": ("node", "request.mjs"),
}
SIZE = (256, 256)
ONE_MEGAPIXEL = (1024, 1024)
"""Milady and ImagineArt (resolution 1K) have no size field: a square is about one megapixel."""
EXPECTED_SIZE = {"openai": SIZE, "aigne": SIZE, "aiml": SIZE, "milady": ONE_MEGAPIXEL, "imagineart": ONE_MEGAPIXEL}
PROGRAM_TIMEOUT = 120


@dataclass(frozen=True)
class Program:
    dialect: str
    language: str
    code: str


@dataclass(frozen=True)
class Outcome:
    program: Program
    returncode: int
    stdout: str
    stderr: str
    images: list[Image.Image]


def show(tab: Tab, dialect: str, language: str) -> Program:
    tab.page.check(f"input[name=dialect][value={dialect}]")
    tab.page.check(f"input[name=lang][value={language}]")
    mode = tab.page.eval_on_selector("input[name=mode]:checked", "radio => radio.value")
    tab.page.wait_for_selector(f"#request-code[data-shows='{dialect}/{language}/{mode}']", state="attached")
    return Program(dialect, language, tab.page.text_content("#request-code") or "")


def links_in(stdout: str) -> list[str]:
    """The image links a curl program printed (the dialect's JSON answer)."""
    body = json.loads(stdout)
    if "images" in body:  # Milady
        return [item["url"] for item in body["images"]]
    if isinstance(body["data"], dict):  # AI.ML
        return [body["data"]["image"]["url"]]
    return [item["url"] for item in body["data"]]  # OpenAI, AIGNE Hub


def run(program: Program, folder: Path, files: dict[str, bytes], token: str) -> Outcome:
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    command, script = RUNNERS[program.language]
    (folder / script).write_text(program.code, encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}
    env.update(LIMNER_TOKEN=token, NO_PROXY="127.0.0.1")
    done = subprocess.run(
        [command, script], cwd=folder, env=env, capture_output=True, text=True, timeout=PROGRAM_TIMEOUT, check=False
    )
    images = [decode(path.read_bytes()) for path in sorted(folder.glob("image*.png"))]
    if program.language == "curl" and program.dialect != "imagineart" and done.returncode == 0:
        images = [decode(httpx.get(url).raise_for_status().content) for url in links_in(done.stdout)]
    return Outcome(program, done.returncode, done.stdout, done.stderr, images)


def run_all(programs: list[Program], tmp_path: Path, files: dict[str, bytes], token: str) -> list[Outcome]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(
            pool.map(
                lambda pair: run(pair[1], tmp_path / f"{pair[0]}-{pair[1].dialect}-{pair[1].language}", files, token),
                enumerate(programs),
            )
        )


def require_tools() -> None:
    for tool in ("bash", "curl", "node"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed; the page's {tool} programs cannot be run here")


def check(outcome: Outcome, count: int) -> None:
    what = f"{outcome.program.dialect}/{outcome.program.language}"
    assert outcome.returncode == 0, (
        f"{what} failed:\n{outcome.program.code}\n--- stdout\n{outcome.stdout}\n--- stderr\n{outcome.stderr}"
    )
    assert len(outcome.images) == count, f"{what}: {len(outcome.images)} images\n{outcome.stdout}"
    for image in outcome.images:
        assert image.size == EXPECTED_SIZE[outcome.program.dialect], f"{what}: {image.size}"


def test_every_request_the_page_shows_runs_against_the_server(
    playground: Callable[..., Tab], locked_playground: Locked, tmp_path: Path
) -> None:
    require_tools()
    tab = playground(locked_playground.url, token=locked_playground.tokens.valid)
    page = tab.page
    page.fill("#prompt", "a red apple, 'quoted' \"twice\" $HOME `x`")
    page.select_option("#size", "256x256")
    for field, value in {"#n": "2", "#seed": "42", "#steps": "5", "#guidance": "3", "#negative": "blurry"}.items():
        page.fill(field, value)
    page.select_option("#style", "line-art")

    page.click("#show-request")
    page.wait_for_selector("#request-dialog[open]")
    drawing = [show(tab, dialect, language) for dialect in DIALECTS for language in LANGUAGES]
    assert "LIMNER_TOKEN" in (page.text_content("#request-notes") or "")
    page.check("input[name=dialect][value=milady]")
    assert "Not in this dialect, so not sent: seed, steps, guidance, negative prompt." in (
        page.text_content("#request-notes") or ""
    )
    page.click("#request-close")

    page.check("input[name=mode][value=edit]")
    upload(tab, two_colours())
    page.wait_for_selector("#mask-tools", state="visible")
    page.click("#mask-fill")
    page.fill("#n", "1")
    page.click("#show-request")
    page.wait_for_selector("#request-dialog[open]")
    show(tab, "openai", "curl")  # the dialect that sends the mask names both files
    files: dict[str, bytes] = {}
    for name in ("input-1.png", "mask.png"):
        with page.expect_download() as download:
            page.click(f"#request-files a[download='{name}']")
        files[name] = Path(download.value.path()).read_bytes()
    assert decode(files["input-1.png"]).size == SIZE and decode(files["mask.png"]).getextrema() == ((255, 255),) * 3
    editing = [show(tab, dialect, "curl") for dialect in DIALECTS] + [
        show(tab, dialect, language) for dialect in ("openai", "aigne", "imagineart") for language in LANGUAGES[1:]
    ]
    assert "-F 'mask=@mask.png;type=image/png'" in editing[0].code
    tab.assert_clean()

    token = locked_playground.tokens.valid
    assert all(token not in program.code for program in drawing + editing), "the token stays out of the code"
    for outcome in run_all(drawing, tmp_path / "draw", {}, token):
        check(outcome, 2 if outcome.program.dialect in ("openai", "aigne", "milady") else 1)
        if outcome.program.dialect == "openai" and outcome.program.language == "python":
            assert "(seed 42)" in outcome.stdout and "(seed 43)" in outcome.stdout
    for outcome in run_all(editing, tmp_path / "edit", files, token):
        check(outcome, 1)


def test_the_token_can_be_put_in_the_code(playground: Callable[..., Tab], locked_playground: Locked) -> None:
    tab = playground(locked_playground.url, token=locked_playground.tokens.valid)
    tab.page.fill("#prompt", "a cat")
    tab.page.click("#show-request")
    tab.page.wait_for_selector("#request-dialog[open]")
    tab.page.check("#inline-token")
    program = show(tab, "openai", "curl")
    assert f"Authorization: Bearer {locked_playground.tokens.valid}" in program.code
    assert "LIMNER_TOKEN" not in program.code
    answer = subprocess.run(["bash", "-c", program.code], capture_output=True, text=True, timeout=60, check=False)
    assert answer.returncode == 0, answer.stderr
    assert links_in(answer.stdout)
    tab.assert_clean()
