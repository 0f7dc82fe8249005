"""``limner pull`` against a fake hub on 127.0.0.1 serving a tiny pipeline built here; the real hub is never called.

huggingface_hub reads ``HF_HUB_OFFLINE``, ``HF_HOME`` and the token path once, at import (and the test suite runs
with ``HF_HUB_OFFLINE=1``), so the ``hub`` fixture patches its constants for the duration of a test, points
``HF_HOME`` at a temporary directory, and leaves ``HF_ENDPOINT`` at a closed loopback port unless a test points it
at the fake hub: anything not aimed at the fake hub fails on this machine instead of reaching out.
"""

from __future__ import annotations

import hashlib
import json
import socket
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from limner.cli import app
from limner.engines.diffusers_loading import dtype_argument
from limner.pull import PullError, pull
from tests.support.fake_hub import FakeHub
from tests.support.live_server import live_server

REPO = "tiny/tiny-sd"
UNET_FP16 = "unet/diffusion_pytorch_model.fp16.safetensors"
NEVER_FETCHED = ("unet/diffusion_pytorch_model.bin", "unet/model.onnx", "tiny-sd-all-in-one.safetensors")


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A tiny SD pipeline laid out like real hub repos: fp32 and fp16 weights, pickle and ONNX duplicates,
    an all-in-one checkpoint at the root, a README."""
    import torch
    from diffusers import DiffusionPipeline

    from tests.support.tiny_diffusers import build_tiny_sd

    root = tmp_path_factory.mktemp("tiny-sd")
    build_tiny_sd(root / "fp32")
    half = DiffusionPipeline.from_pretrained(root / "fp32", local_files_only=True, **dtype_argument(torch.float16))
    half.save_pretrained(root / "fp16", variant="fp16")
    files = {p.relative_to(root / "fp32").as_posix(): p.read_bytes() for p in (root / "fp32").rglob("*") if p.is_file()}
    files |= {p.relative_to(root / "fp16").as_posix(): p.read_bytes() for p in (root / "fp16").rglob("*.fp16.*")}
    files["unet/diffusion_pytorch_model.bin"] = b"a pickled duplicate that must never be fetched"
    files["unet/model.onnx"] = b"an ONNX export that must never be fetched"
    files["tiny-sd-all-in-one.safetensors"] = files["unet/diffusion_pytorch_model.safetensors"]
    files["README.md"] = b"---\nlicense: apache-2.0\n---\n# tiny-sd\n"
    files[".gitattributes"] = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    return files


@pytest.fixture(scope="module")
def single_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from tests.support.tiny_diffusers import build_tiny_sd_single_file

    return build_tiny_sd_single_file(tmp_path_factory.mktemp("single")).read_bytes()


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_repo: dict[str, bytes]) -> Iterator[FakeHub]:
    """A fresh fake hub (faults and request log per test), and huggingface_hub isolated from the machine."""
    import huggingface_hub.constants as constants

    home = tmp_path / "hf-home"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LIMNER_CONFIG", str(tmp_path / "limner.toml"))
    fake = FakeHub()
    fake.add_repo(REPO, tiny_repo)
    yield fake


@pytest.fixture
def hub_url(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with live_server(hub) as url:
        monkeypatch.setenv("HF_ENDPOINT", url)
        yield url


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(*args: str) -> Any:
    return CliRunner().invoke(app, ["pull", *args], catch_exceptions=False)


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- hub repos ---


def test_pull_fetches_only_what_the_pipeline_loads_and_adds_it_to_the_catalog(
    hub: FakeHub, hub_url: str, tmp_path: Path, tiny_repo: dict[str, bytes]
) -> None:
    models = tmp_path / "models"
    result = _run(REPO, "--models-dir", str(models))
    assert result.exit_code == 0, result.output
    assert "added model 'tiny-sd'" in result.output

    model = models / "tiny-sd"
    assert _files(models) == {f"tiny-sd/{path}" for path in _files(model)}  # no stage, no partial, no cache left
    assert "unet/diffusion_pytorch_model.safetensors" in _files(model)
    assert not any(".fp16." in path or path.endswith((".bin", ".onnx")) for path in _files(model))
    assert {"model_index.json", "README.md", "limner-pull.json"} <= _files(model)
    assert (model / "unet/diffusion_pytorch_model.safetensors").read_bytes() == tiny_repo[UNET_FP16]
    for path in (*NEVER_FETCHED, "unet/diffusion_pytorch_model.safetensors", ".gitattributes"):
        assert not hub.fetched(f"/{path}") and not hub.fetched(_sha(tiny_repo[path])), path
    assert hub.fetched("/cdn/")  # weights came over plain HTTP from the "CDN": the fake hub never offers Xet

    catalog = tomllib.loads((tmp_path / "limner.toml").read_text())["models"]
    assert [entry["id"] for entry in catalog] == ["limner-emoji", "tiny-sd"]  # the built-in model is kept
    assert catalog[1] | {"path": None} == {
        "id": "tiny-sd",
        "engine": "diffusers",
        "path": None,
        "owned_by": "tiny",
        "description": f"pulled from {REPO} @ {hub.repos[REPO].commit[:12]}",
    }
    assert Path(catalog[1]["path"]) == model.resolve()

    from diffusers import DiffusionPipeline

    from limner.settings import Settings

    assert [entry.id for entry in Settings().models] == ["limner-emoji", "tiny-sd"]
    pipe = DiffusionPipeline.from_pretrained(catalog[1]["path"], local_files_only=True)
    assert type(pipe).__name__ == "StableDiffusionPipeline"


def test_pulling_again_downloads_nothing(
    hub: FakeHub, hub_url: str, tmp_path: Path, tiny_repo: dict[str, bytes]
) -> None:
    models = tmp_path / "models"
    assert _run(REPO, "--models-dir", str(models)).exit_code == 0
    transfers = len(hub.fetched("/cdn/"))
    again = _run(REPO, "--models-dir", str(models))
    assert again.exit_code == 0, again.output
    assert "already up to date" in again.output and "updated model 'tiny-sd'" in again.output
    assert len(hub.fetched("/cdn/")) == transfers
    assert [m["id"] for m in tomllib.loads((tmp_path / "limner.toml").read_text())["models"]].count("tiny-sd") == 1

    full = _run(REPO, "--models-dir", str(models), "--variant", "none")  # another choice of files is not up to date
    assert full.exit_code == 0 and "already up to date" not in full.output
    unet = models / "tiny-sd/unet/diffusion_pytorch_model.safetensors"
    assert unet.read_bytes() == tiny_repo["unet/diffusion_pytorch_model.safetensors"]


def test_a_new_revision_fetches_only_what_changed(
    hub: FakeHub, hub_url: str, tmp_path: Path, tiny_repo: dict[str, bytes]
) -> None:
    models = tmp_path / "models"
    first = pull(REPO, models_dir=models, endpoint=hub_url)
    config = json.loads(tiny_repo["scheduler/scheduler_config.json"])
    hub.add_repo(
        REPO, tiny_repo | {"scheduler/scheduler_config.json": json.dumps({**config, "steps_offset": 1}).encode()}
    )
    transfers = len(hub.fetched("/cdn/"))
    second = pull(REPO, models_dir=models, endpoint=hub_url)
    assert second.commit != first.commit and second.downloaded
    assert len(hub.fetched("/cdn/")) == transfers  # every weight file was unchanged: hard-linked, not downloaded
    assert json.loads((second.path / "scheduler/scheduler_config.json").read_text())["steps_offset"] == 1
    assert json.loads((second.path / "limner-pull.json").read_text())["commit"] == second.commit


def test_a_dropped_connection_resumes_with_a_range_request(
    hub: FakeHub, hub_url: str, tmp_path: Path, tiny_repo: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants as constants

    # huggingface_hub writes 10 MB chunks; the tiny weights are smaller, so nothing would reach the disk before the
    # cut and the retry would start at byte 0. Small chunks make this a real resume.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1024)
    hub.drop_once.add(UNET_FP16)
    result = pull(REPO, models_dir=tmp_path / "models", endpoint=hub_url)

    ranges = [r for _, _, r in hub.fetched(_sha(tiny_repo[UNET_FP16]))]
    assert ranges[0] is None and ranges[1] is not None and int(ranges[1].removeprefix("bytes=").rstrip("-")) > 0
    assert (result.path / "unet/diffusion_pytorch_model.safetensors").read_bytes() == tiny_repo[UNET_FP16]


def test_a_corrupt_file_is_refused_deleted_and_fetched_again_on_the_next_run(
    hub: FakeHub, hub_url: str, tmp_path: Path, tiny_repo: dict[str, bytes]
) -> None:
    models = tmp_path / "models"
    hub.corrupt.add(UNET_FP16)
    with pytest.raises(PullError, match=f"checksum mismatch for {UNET_FP16}.*run the same command again"):
        pull(REPO, models_dir=models, endpoint=hub_url)
    assert not (models / "tiny-sd").exists()
    assert not (tmp_path / "limner.toml").exists()
    leftovers = [p for p in models.rglob("*") if p.is_file()]
    assert not any(p.name.endswith(".incomplete") for p in leftovers)
    corrupt = hub._maybe_corrupt(UNET_FP16, tiny_repo[UNET_FP16])
    assert not any(p.read_bytes() == corrupt for p in leftovers)

    hub.corrupt.clear()
    other = _sha(tiny_repo["vae/diffusion_pytorch_model.fp16.safetensors"])
    fetched_before = len(hub.fetched(other))
    result = pull(REPO, models_dir=models, endpoint=hub_url)
    assert (result.path / "unet/diffusion_pytorch_model.safetensors").read_bytes() == tiny_repo[UNET_FP16]
    assert len(hub.fetched(other)) == fetched_before  # verified files of the failed run were kept


def test_a_directory_limner_did_not_make_is_never_replaced(hub: FakeHub, hub_url: str, tmp_path: Path) -> None:
    mine = tmp_path / "models" / "tiny-sd"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("my own files")
    with pytest.raises(PullError, match="was not made by limner pull; remove it or choose another --name"):
        pull(REPO, models_dir=tmp_path / "models", endpoint=hub_url)
    assert (mine / "notes.txt").read_text() == "my own files"
    assert pull(REPO, models_dir=tmp_path / "models", name="tiny-2", endpoint=hub_url).model_id == "tiny-2"


def test_offline_is_one_clear_line_and_a_failing_exit(hub: FakeHub, tmp_path: Path) -> None:
    result = _run(REPO, "--models-dir", str(tmp_path / "models"))  # HF_ENDPOINT: a closed port
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: could not reach http://127.0.0.1:")
    assert ": no network" in lines[0] and "point a catalog entry's path at the directory" in lines[0]
    assert not (tmp_path / "limner.toml").exists()


def test_hf_hub_offline_is_respected(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    result = _run(REPO, "--models-dir", str(tmp_path / "models"))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: HF_HUB_OFFLINE is set") and result.stderr.count("\n") == 1


def test_unknown_repos_and_revisions_say_so(hub: FakeHub, hub_url: str, tmp_path: Path) -> None:
    with pytest.raises(PullError, match=r"tiny/nope was not found on http://127\.0\.0\.1"):
        pull("tiny/nope", models_dir=tmp_path, endpoint=hub_url)
    with pytest.raises(PullError, match="tiny/tiny-sd has no revision 'v9'"):
        pull(REPO, models_dir=tmp_path, revision="v9", endpoint=hub_url)
    hub.add_repo("tiny/not-a-pipeline", {"model.safetensors": b"x"})
    with pytest.raises(PullError, match=r"not a diffusers pipeline.*resolve/main/<file>\.safetensors"):
        pull("tiny/not-a-pipeline", models_dir=tmp_path, endpoint=hub_url)


# --- single files ---


def test_a_single_file_url_with_its_sha256_lands_with_a_config_dir_and_loads(
    hub: FakeHub, hub_url: str, tmp_path: Path, single_file: bytes
) -> None:
    hub.files["tiny-sd-turbo.safetensors"] = single_file
    url = f"{hub_url}/files/tiny-sd-turbo.safetensors"
    args = [url, "--sha256", _sha(single_file), "--config", REPO, "--single-file-class", "StableDiffusionPipeline"]
    result = _run(*args, "--models-dir", str(tmp_path / "models"), "--allow-http-loopback")
    assert result.exit_code == 0, result.output

    entry = tomllib.loads((tmp_path / "limner.toml").read_text())["models"][1]
    assert entry["id"] == "tiny-sd-turbo" and entry["single_file_class"] == "StableDiffusionPipeline"
    assert (entry["default_steps"], entry["default_guidance"], entry["default_strength"]) == (1, 0.0, 0.5)
    checkpoint, config = Path(entry["path"]), Path(entry["config_dir"])
    assert checkpoint.read_bytes() == single_file
    assert "model_index.json" in _files(config) and not any(p.endswith(".safetensors") for p in _files(config))

    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_single_file(str(checkpoint), config=str(config), local_files_only=True)
    assert pipe.unet is not None

    transfers = len(hub.fetched("/files/"))
    again = _run(*args, "--models-dir", str(tmp_path / "models"), "--allow-http-loopback")
    assert again.exit_code == 0 and "already up to date" in again.output and len(hub.fetched("/files/")) == transfers


def test_a_single_file_with_the_wrong_sha256_is_deleted(hub: FakeHub, hub_url: str, tmp_path: Path) -> None:
    hub.files["model.safetensors"] = _tiny_safetensors()
    args = [f"{hub_url}/files/model.safetensors", "--sha256", "0" * 64, "--allow-http-loopback"]
    result = _run(*args, "--models-dir", str(tmp_path / "models"))
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]  # above it: the progress bar
    assert last.startswith("error: sha256 mismatch for model.safetensors: expected 0000")
    assert not [p for p in (tmp_path / "models").rglob("*") if p.is_file()]
    assert not (tmp_path / "limner.toml").exists()


def test_a_single_file_resumes_within_a_run_and_across_runs(hub: FakeHub, hub_url: str, tmp_path: Path) -> None:
    data = _tiny_safetensors(4096)
    hub.files["model.safetensors"] = hub.files["again.safetensors"] = data
    url = f"{hub_url}/files/model.safetensors"
    hub.drop_once.add("model.safetensors")
    result = pull(url, models_dir=tmp_path / "a", sha256=_sha(data), allow_http_loopback=True)
    assert result.path.read_bytes() == data
    assert [r for _, _, r in hub.fetched("/files/model.safetensors")] == [None, f"bytes={len(data) // 2}-"]

    # A run killed half-way leaves <file>.part and the server's validator beside it; the next run asks for the rest.
    url = f"{hub_url}/files/again.safetensors"
    stage = tmp_path / "b" / ".again.partial"
    stage.mkdir(parents=True)
    (stage / "again.safetensors.part").write_bytes(data[:1000])
    (stage / "again.safetensors.part.json").write_text(json.dumps({"url": url, "validator": f'"{_sha(data)}"'}))
    result = pull(url, models_dir=tmp_path / "b", sha256=_sha(data), allow_http_loopback=True)
    assert result.path.read_bytes() == data
    assert [r for _, _, r in hub.fetched("/files/again.safetensors")] == ["bytes=1000-"]


def test_a_single_file_checks_what_it_got(hub: FakeHub, hub_url: str, tmp_path: Path) -> None:
    hub.files["login.safetensors"] = b"<html>please log in</html>"
    with pytest.raises(PullError, match="not a safetensors file"):
        pull(f"{hub_url}/files/login.safetensors", models_dir=tmp_path, allow_http_loopback=True)
    hub.files["hub.safetensors"] = _tiny_safetensors()
    hub.linked_sha256["hub.safetensors"] = "1" * 64  # a hub URL publishes the sha256: used without --sha256
    with pytest.raises(PullError, match=r"sha256 mismatch for hub\.safetensors: expected 1111"):
        pull(f"{hub_url}/files/hub.safetensors", models_dir=tmp_path, allow_http_loopback=True)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_plain_http_and_pickles_are_refused(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(PullError, match="refusing plain http"):
        pull("http://127.0.0.1:9/model.safetensors", models_dir=tmp_path)
    with pytest.raises(PullError, match="refusing plain http"):
        pull("http://example.com/model.safetensors", models_dir=tmp_path, allow_http_loopback=True)
    with pytest.raises(PullError, match=r"not a \.safetensors or \.gguf file; pickled"):
        pull("https://example.com/model.ckpt", models_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_an_unreachable_file_host_is_one_clear_line(hub: FakeHub, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/model.safetensors"
    result = _run(url, "--models-dir", str(tmp_path / "models"), "--allow-http-loopback")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: could not reach http://127.0.0.1:") and result.stderr.count("\n") == 1
    assert "point a catalog entry's path at the directory" in result.stderr


def _tiny_safetensors(size: int = 64) -> bytes:
    header = json.dumps({"w": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}}).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + bytes(range(256)) * (size // 256) + bytes(size % 256)


# --- GGUF denoisers ---


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The fake hub's tiny-sd UNet (same seed, same weights) as a Q8_0 GGUF file."""
    from tests.support.tiny_diffusers import build_tiny_sd
    from tests.support.tiny_gguf import build_tiny_gguf

    root = tmp_path_factory.mktemp("gguf")
    path, _, _ = build_tiny_gguf(build_tiny_sd(root / "sd"), root / "out")
    return path.read_bytes()


async def test_a_gguf_denoiser_lands_with_the_other_components_and_generates(
    hub: FakeHub, hub_url: str, tmp_path: Path, gguf_file: bytes
) -> None:
    from limner.core.models import EngineRequest, Mode
    from limner.engines.catalog import Catalog, ModelEntry
    from limner.engines.registry import default_factories

    hub.files["tiny-sd-unet-Q8_0.gguf"] = gguf_file
    url = f"{hub_url}/files/tiny-sd-unet-Q8_0.gguf"
    args = [url, "--sha256", _sha(gguf_file), "--config", REPO, "--allow-http-loopback"]
    result = _run(*args, "--models-dir", str(tmp_path / "models"))
    assert result.exit_code == 0, result.output
    assert "config/ holds the other components' weights" in result.output

    entry = tomllib.loads((tmp_path / "limner.toml").read_text())["models"][1]
    assert entry["id"] == "tiny-sd-unet-q8_0" and Path(entry["path"]).read_bytes() == gguf_file
    config = _files(Path(entry["config_dir"]))
    assert {"vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"} <= config
    assert "unet/config.json" in config and not any(p.startswith("unet/") and "safetensors" in p for p in config)

    model = ModelEntry(**entry, device="cpu")
    engine = Catalog([model], default_factories()).engine(model)
    try:
        [image] = await engine.generate(EngineRequest(Mode.GENERATE, "a boat", width=64, height=64, seeds=[1], steps=1))
    finally:
        await engine.aclose()
    assert image.image.size == (64, 64)


def test_a_damaged_gguf_file_is_refused_and_deleted(
    hub: FakeHub, hub_url: str, tmp_path: Path, gguf_file: bytes
) -> None:
    hub.files["cut.gguf"] = gguf_file[: len(gguf_file) // 2]
    with pytest.raises(PullError, match=r"cut\.gguf: truncated or damaged GGUF file .*; the download was deleted"):
        pull(f"{hub_url}/files/cut.gguf", models_dir=tmp_path, allow_http_loopback=True)
    hub.files["page.gguf"] = b"<html>please log in</html>"
    with pytest.raises(PullError, match=r"page\.gguf: not a GGUF file"):
        pull(f"{hub_url}/files/page.gguf", models_dir=tmp_path, allow_http_loopback=True)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
