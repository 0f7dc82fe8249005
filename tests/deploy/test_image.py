"""The container image: built from the Containerfile (on a Debian base made here, this machine reaching no
registry) and run as an operator runs it: read-only root filesystem, data in a volume, the user 10001; it
answers /health and its health check, and generates with its default model in two dialects (OpenAI through
the official SDK, AI.ML over httpx); then it stops and its container and volume go.

The first run on a machine takes about 18 minutes (the base's root filesystem, kept in build/image/, and the
dependencies' layer, about 2 GB); later runs reuse both and rebuild only limner's own layers, about two and a
half minutes in all. What stays between runs is that cache: the images localhost/limner-base:bookworm,
localhost/limner-deps:test (tagged, so ``podman image prune`` keeps it) and localhost/limner:test; the
container and its volume are removed. ``make setup`` installs buildah, podman and mmdebstrap; without them
(or without root) the test skips and says so. Because of those minutes it runs on its own, ``make test-image``
(``LIMNER_IMAGE_TEST=1``), not in ``make test``."""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image

from limner.cli.local_services import free_port

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/limner:test"
DEPS = "localhost/limner-deps:test"
BASE = "localhost/limner-base:bookworm"
PODMAN = ["podman", "--runtime", "runc"]
# What this machine allows a container: its limits as they are (raising them is refused), the host's network.
RUN = ["run", "--network", "host", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000"]
TOOLS = ("buildah", "podman", "mmdebstrap", "runc")
START_SECONDS = 240.0
GENERATE_SECONDS = 300.0

missing = [tool for tool in TOOLS if shutil.which(tool) is None]
pytestmark = [
    pytest.mark.skipif(
        os.environ.get("LIMNER_IMAGE_TEST") != "1",
        reason="the image build takes minutes (18 on a fresh machine): run it with `make test-image`",
    ),
    pytest.mark.skipif(
        bool(missing) or os.geteuid() != 0,
        reason=f"the image test needs {', '.join(missing) or 'root'} (make setup installs buildah, podman, mmdebstrap)",
    ),
]


def run(*command: str, timeout: float, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
    assert done.returncode == 0, f"{' '.join(command)}: {done.stderr[-4000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def image() -> str:
    run("deploy/container/debian-base.sh", timeout=600, env={"BASE_IMAGE": BASE})
    run("deploy/container/build-image.sh", timeout=1800, env={"IMAGE": IMAGE, "IMAGE_BASE": BASE, "DEPS_IMAGE": DEPS})
    return IMAGE


@pytest.fixture(scope="module")
def server(image: str) -> Iterator[tuple[str, str]]:
    """The image running as an operator would: (its URL, its container's name)."""
    port, name = free_port(), f"limner-test-{os.getpid()}"
    run(*PODMAN, *RUN, "--detach", "--name", name, "--read-only", "--volume", "/var/lib/limner",
        "--env", "LIMNER_HOST=127.0.0.1", "--env", f"LIMNER_PORT={port}", image, timeout=120)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while not _healthy(url):
            state = run(*PODMAN, "inspect", "--format", "{{.State.Status}}", name, timeout=30).strip()
            assert state == "running", f"the container stopped ({state}): {_logs(name)}"
            assert time.monotonic() < deadline, f"no /health within {START_SECONDS:g} s: {_logs(name)}"
            time.sleep(1)
        yield url, name
    finally:
        subprocess.run([*PODMAN, "stop", "--time", "20", name], capture_output=True, timeout=60)
        subprocess.run([*PODMAN, "rm", "--force", "--volumes", name], capture_output=True, timeout=60)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=2).json() == {"ok": True}
    except httpx.HTTPError:
        return False


def _logs(name: str) -> str:
    return subprocess.run([*PODMAN, "logs", name], capture_output=True, text=True, timeout=30).stderr[-4000:]


def picture(encoded: str, size: tuple[int, int]) -> Image.Image:
    decoded = Image.open(io.BytesIO(base64.b64decode(encoded)))
    decoded.load()
    assert decoded.size == size
    colors = decoded.convert("RGB").getcolors(maxcolors=size[0] * size[1])
    assert colors is not None and len(colors) > 16, "a generated picture, not a flat fill"
    return decoded


def test_the_image_runs_as_10001_with_a_read_only_root_and_its_data_in_the_volume(
    server: tuple[str, str],
) -> None:
    url, name = server
    assert httpx.get(url + "/health").json() == {"ok": True}
    healthcheck = subprocess.run([*PODMAN, "healthcheck", "run", name], capture_output=True, text=True, timeout=60)
    assert healthcheck.returncode == 0, healthcheck.stdout + healthcheck.stderr
    assert run(*PODMAN, "exec", name, "id", "-u", timeout=30).strip() == "10001"
    config = run(*PODMAN, "inspect", "--format", "{{.HostConfig.ReadonlyRootfs}} {{.Config.User}}", name, timeout=30)
    assert config.split() == ["true", "10001:10001"]
    owners = run(*PODMAN, "exec", name, "stat", "-c", "%u %n", "/var/lib/limner/signing.key", timeout=30)
    assert owners.split() == ["10001", "/var/lib/limner/signing.key"], "the server's data is written to the volume"
    refused = subprocess.run([*PODMAN, "exec", name, "touch", "/opt/limner/x"], capture_output=True, timeout=30)
    assert refused.returncode != 0, "the root filesystem is read-only"


def test_the_image_generates_in_two_dialects(server: tuple[str, str]) -> None:
    url, _ = server
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", timeout=GENERATE_SECONDS, max_retries=0)
    answer = client.images.generate(prompt="a red apple", size="64x64", response_format="b64_json")  # type: ignore[arg-type]
    assert answer.data is not None and answer.data[0].b64_json is not None
    picture(answer.data[0].b64_json, (64, 64))
    aiml = httpx.post(
        url + "/v1/generation/images",
        json={"model": "image-gen.pro-1.0", "prompt": "a green pear", "size": "64x64", "response_format": "b64_json"},
        timeout=GENERATE_SECONDS,
    )
    assert aiml.status_code == 200, aiml.text
    picture(aiml.json()["data"]["image"]["b64_json"], (64, 64))
