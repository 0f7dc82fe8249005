"""The README's job clients (``examples/``) run as a user runs them, against a live server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from limner.app import create_app
from limner.service.webhooks import WebhookSecrets, server_secret
from limner.settings import Settings
from tests.support.live_server import live_server

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def server(settings: Settings) -> Iterator[tuple[str, Settings]]:
    tuned = settings.with_overrides(job_poll_seconds=0.05, webhook_allow_private=True)
    with live_server(create_app(tuned)) as url:
        yield url, tuned


def run_example(name: str, url: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        env={**os.environ, "LIMNER_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_retry_with_key_replays_the_first_answer(server: tuple[str, Settings]) -> None:
    out = run_example("retry_with_key.py", server[0])
    assert "replayed: true same image: True" in out


def test_submit_and_poll_gets_the_png(server: tuple[str, Settings]) -> None:
    out = run_example("submit_and_poll.py", server[0])
    assert "accepted: job_" in out
    assert "bytes of PNG, attempts: 1" in out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_webhook_receiver_verifies_and_prints_the_event(server: tuple[str, Settings]) -> None:
    url, settings = server
    secret = WebhookSecrets(server_secret(settings)).legacy_secret("local", 1)
    port = free_port()
    receiver = subprocess.Popen(
        [sys.executable, "-u", str(EXAMPLES / "webhook_receiver.py"), str(port)],
        env={**os.environ, "LIMNER_WEBHOOK_SECRET": secret},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(200):  # until it listens
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                if receiver.poll() is not None:
                    break
        submitted = httpx.post(
            f"{url}/v1/images/generations",
            json={"prompt": "a kite", "size": "256x256"},
            headers={"Prefer": "respond-async", "Limner-Webhook-Url": f"http://127.0.0.1:{port}/hooks"},
            timeout=30,
        )
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        assert receiver.stdout is not None
        line = receiver.stdout.readline().split()
        assert line[:3] == ["job.done", job_id, "done"]
        assert line[3] == f"/v1/jobs/{job_id}/result"
    finally:
        receiver.terminate()
        receiver.wait(10)
        if receiver.stdout is not None:
            receiver.stdout.close()
