"""``limner pull --lora-for``: an adapter from a fake hub on 127.0.0.1, verified, attached to its model's entry."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from limner.pull import PullError
from limner.pull.adapters import pull_lora
from tests.pull.test_pull import REPO, _run, hub, hub_url, tiny_repo  # noqa: F401  (fixtures)
from tests.support.fake_hub import FakeHub

LORA_REPO = "someone/ink-lora"


@pytest.fixture(scope="module")
def lora_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from tests.support.tiny_diffusers import build_tiny_sd
    from tests.support.tiny_loras import build_tiny_lora

    root = tmp_path_factory.mktemp("lora")
    return build_tiny_lora(build_tiny_sd(root / "sd"), root / "ink").read_bytes()


def test_pull_attaches_an_adapter_to_a_pulled_model(
    hub: FakeHub,  # noqa: F811
    hub_url: str,  # noqa: F811
    tmp_path: Path,
    lora_bytes: bytes,
) -> None:
    hub.add_repo(LORA_REPO, {"pytorch_lora_weights.safetensors": lora_bytes, "README.md": b"# ink\n"})
    models = tmp_path / "models"
    assert _run(REPO, "--models-dir", str(models)).exit_code == 0
    result = _run(LORA_REPO, "--lora-for", "tiny-sd", "--weight", "0.7", "--models-dir", str(models))
    assert result.exit_code == 0, result.output
    assert "added LoRA 'ink-lora' of model 'tiny-sd'" in result.output
    weights = models / "loras" / "ink-lora" / "pytorch_lora_weights.safetensors"
    assert weights.read_bytes() == lora_bytes
    assert not (models / "loras" / "ink-lora" / "README.md").exists(), "only the weights are fetched"

    [entry] = [m for m in tomllib.loads((tmp_path / "limner.toml").read_text())["models"] if m["id"] == "tiny-sd"]
    assert entry["loras"] == [
        {
            "name": "ink-lora",
            "path": str(weights.resolve()),
            "weight": 0.7,
            "repo": LORA_REPO,
            "description": f"pulled from {LORA_REPO} @ {hub.repos[LORA_REPO].commit[:12]}",
        }
    ]
    again = _run(LORA_REPO, "--lora-for", "tiny-sd", "--models-dir", str(models))
    assert "already up to date" in again.output and "updated LoRA 'ink-lora'" in again.output

    from limner.settings import Settings

    [model] = [m for m in Settings().models if m.id == "tiny-sd"]
    assert [(lora.name, lora.weight) for lora in model.loras] == [("ink-lora", 0.7)]


def test_adapters_need_a_known_model_and_one_weights_file(
    hub: FakeHub,  # noqa: F811
    hub_url: str,  # noqa: F811
    tmp_path: Path,
    lora_bytes: bytes,
) -> None:
    hub.add_repo(LORA_REPO, {"a.safetensors": lora_bytes, "b.safetensors": lora_bytes})
    result = _run(LORA_REPO, "--lora-for", "no-such-model", "--weight-name", "b.safetensors")
    assert result.exit_code == 1 and "model 'no-such-model' is not in the catalog" in result.output
    assert not hub.fetched("/cdn/"), "nothing is downloaded for a model that does not exist"
    result = _run(LORA_REPO, "--lora-for", "limner-emoji", "--models-dir", str(tmp_path / "models"))
    assert result.exit_code == 1
    assert "has several .safetensors files (a.safetensors, b.safetensors): pass --weight-name FILE" in result.output
    with pytest.raises(PullError, match=r"has no c\.safetensors"):
        pull_lora(LORA_REPO, models_dir=tmp_path / "models", weight_name="c.safetensors")
