"""``limner pull`` on a machine with no network, run exactly as a user runs it: the installed command, in a process.

In-process tests import huggingface_hub's submodules themselves, which hides a missing import in limner; a fresh
process does not. Nothing may leave the machine, even through a bug: every proxy variable points at a closed
loopback port, and huggingface_hub's HTTP client honours them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

HINT = "point a catalog entry's path at the directory"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _command() -> list[str]:
    """The ``limner`` console script next to this Python, as a user would type it; else ``python -m limner.cli``."""
    script = Path(sys.executable).with_name("limner")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "limner.cli"]


def _pull(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``limner pull stabilityai/sdxl-turbo`` with a clean hub/limner environment and every proxy closed."""
    proxy = f"http://127.0.0.1:{_closed_port()}"
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HF_", "HUGGING_FACE_", "LIMNER_")) and key.lower() not in {"no_proxy"}
    }
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"):
        environment[name] = environment[name.lower()] = proxy
    environment |= {
        "HF_HOME": str(tmp_path / "hf-home"),
        "LIMNER_CONFIG": str(tmp_path / "limner.toml"),
        "LIMNER_DATA_DIR": str(tmp_path / "data"),
        **env,
    }
    return subprocess.run(
        [*_command(), "pull", "stabilityai/sdxl-turbo"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    return lines[0]


def test_hf_hub_offline_gives_one_line(tmp_path: Path) -> None:
    line = _one_line(_pull(tmp_path, HF_HUB_OFFLINE="1"))
    assert line.startswith("error: HF_HUB_OFFLINE is set, so nothing can be downloaded: unset it and run again.")
    assert HINT in line
    assert not (tmp_path / "limner.toml").exists() and not (tmp_path / "data").exists()


def test_no_network_to_the_default_hub_gives_one_line(tmp_path: Path) -> None:
    line = _one_line(_pull(tmp_path))  # the default endpoint, reachable only through the closed proxy
    assert line.startswith("error: could not reach https://huggingface.co: no network (")
    assert HINT in line


def test_an_unreachable_endpoint_gives_one_line(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    line = _one_line(_pull(tmp_path, HF_ENDPOINT=endpoint))
    assert line.startswith(f"error: could not reach {endpoint}: no network (")
    assert HINT in line
