"""LiteLLM's proxy as the gateway limner is compared with: its own virtual environment, a config routing one
image model to the fake provider, and an environment that keeps it on 127.0.0.1.

The virtual environment lives in ``.bench/litellm-venv`` (ignored by git through ``.bench/.gitignore``) and
is made on first use with ``pip install litellm[proxy]==VERSION`` from the package registry, so LiteLLM's
dependencies never meet limner's. LiteLLM fetches its model cost map and a few other files from GitHub
at import unless told to use its bundled copies; the environment below tells it, and points the URLs it
would fetch at a closed loopback port in case a version ignores the switches.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.harness import ROOT

VERSION = "1.81.13"
"""A known-good release: the one the comparison in the README was first measured with."""
BENCH_DIR = ROOT / ".bench"
VENV = BENCH_DIR / "litellm-venv"
NOWHERE = "http://127.0.0.1:9/"
"""The discard port on loopback: nothing listens, so a fetch fails at once without leaving the machine."""
OFFLINE = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_MODEL_COST_MAP_URL": NOWHERE,
    "LITELLM_ANTHROPIC_BETA_HEADERS_URL": NOWHERE,
    "NO_PROXY": "*",
}
PASSED_ON = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")
"""What LiteLLM keeps of our environment: nothing that could configure it (``DATABASE_URL``, ``LITELLM_*``,
provider keys, proxies)."""


def executable(name: str) -> Path:
    return VENV / "bin" / name


def installed_version() -> str | None:
    python = executable("python")
    if not python.exists():
        return None
    shown = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return shown.stdout.strip() if shown.returncode == 0 else None


def ensure(version: str = VERSION) -> Path:
    """The ``litellm`` command of ``litellm[proxy]==version``, installed first when missing or another version."""
    if installed_version() == version and executable("litellm").exists():
        return executable("litellm")
    BENCH_DIR.mkdir(exist_ok=True)
    (BENCH_DIR / ".gitignore").write_text("*\n")
    if not executable("python").exists():
        print(f"creating {VENV.relative_to(ROOT)}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    print(f"installing litellm[proxy]=={version} into {VENV.relative_to(ROOT)} (a minute or two)", flush=True)
    pip = [str(executable("python")), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, f"litellm[proxy]=={version}"], check=True)
    return executable("litellm")


def write_config(path: Path, *, model: str, provider_url: str, api_key: str) -> Path:
    """One image model routed to the provider's OpenAI Images API; no master key and no database (LiteLLM's
    defaults), telemetry off. Written as JSON, which every YAML reader accepts."""
    config = {
        "model_list": [
            {
                "model_name": model,
                "litellm_params": {"model": f"openai/{model}", "api_base": provider_url, "api_key": api_key},
                "model_info": {"mode": "image_generation"},
            }
        ],
        "litellm_settings": {"telemetry": False},
    }
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def command(config: Path) -> list[str]:
    """``litellm`` on loopback (the caller adds ``--port``); one process, as LiteLLM starts by default."""
    return [str(executable("litellm")), "--config", str(config), "--host", "127.0.0.1"]


def environment() -> dict[str, str]:
    return {name: os.environ[name] for name in PASSED_ON if name in os.environ} | OFFLINE


HEALTH = "/health/liveliness"
"""LiteLLM's ``/health`` calls every model; this one only says the server is up."""
