"""``limner dev cluster`` as an operator runs it: PostgreSQL, Redis, an S3-compatible store, a Ray head and
two API replicas come up on loopback; an image made by one replica (on Ray) is served by the other; and
SIGTERM takes every piece down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from limner.cli.local_services import free_port
from tests.support.waiting import wait_until

pytest.importorskip("ray", reason="ray[serve] is installed by make setup (dev extra)")


def test_two_replicas_share_media_and_the_model_on_ray(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    ports = f"{free_port()},{free_port()}"
    command = [sys.executable, "-m", "limner.cli", "dev", "cluster", "--dir", str(tmp_path / "cluster")]
    command += ["--ports", ports, "--ready-file", str(ready)]
    log = (tmp_path / "cluster.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
    try:
        wait_until(lambda: ready.exists() or process.poll() is not None, timeout=240, what="the cluster to start")
        assert process.poll() is None, (tmp_path / "cluster.log").read_text()
        first, second = json.loads(ready.read_text())["replicas"]
        made = httpx.post(
            first + "/v1/images/generations", json={"prompt": "a red apple", "size": "64x64"}, timeout=180
        )
        assert made.status_code == 200, made.text
        path = made.json()["data"][0]["url"].split("://", 1)[1].split("/", 1)[1]
        served = httpx.get(f"{second}/{path}", timeout=30)
        assert served.status_code == 200 and served.headers["content-type"] == "image/png"
        assert served.content[:8] == b"\x89PNG\r\n\x1a\n"
        children = psutil.Process(process.pid).children(recursive=True)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
        log.close()
    assert process.returncode == 0
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"left running: {[p.info for p in alive]}"
