"""Step-level batching seen from outside: an async job sent while a long one runs on the first-generation emoji
diffusion pipeline (built small, random weights) joins it within a step or two and, needing fewer steps, ends
first (followed through ``/v1/jobs/{id}/events``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

import limner.engines.diffusers_engine  # noqa: F401 - diffusers imported here, not in the server's startup
from limner.app import create_app
from limner.settings import Settings
from tests.support.live_server import live_server
from tests.support.tiny_emoji import build_tiny_emoji_diffusion, emoji_diffusion_entry
from tests.support.waiting import wait_until

MODEL = "emoji-diffusion"
LONG_STEPS = 40
SHORT_STEPS = 4


@pytest.fixture
def server(settings: Settings, tmp_path: Path) -> Iterator[str]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    # its real width: a step slow enough (tens of ms) that the HTTP calls around the join take a step or two
    model = build_tiny_emoji_diffusion(tmp_path / "emoji-diffusion", width=48)
    entry = emoji_diffusion_entry(model, MODEL)
    app = create_app(settings.with_overrides(models=[entry], default_model=MODEL, job_poll_seconds=0.05))
    try:
        with live_server(app) as url:
            yield url
    finally:
        torch.set_num_threads(threads)


def submit(server: str, prompt: str, steps: int, n: int = 1) -> str:
    body = {"model": MODEL, "prompt": prompt, "n": n, "size": "256x256", "steps": steps, "seed": steps}
    response = httpx.post(server + "/v1/images/generations", json=body, headers={"Prefer": "respond-async"}, timeout=30)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def status(server: str, job_id: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{server}/v1/jobs/{job_id}", timeout=30).json()
    return body


def events(server: str, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    name = ""
    with httpx.stream("GET", f"{server}/v1/jobs/{job_id}/events", timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                found.append((name, json.loads(line.removeprefix("data: "))))
    return found


def test_a_short_job_joins_a_running_long_one_and_finishes_first(server: str) -> None:
    long = submit(server, "a pizza", LONG_STEPS, n=2)
    wait_until(lambda: (status(server, long)["step"] or 0) >= 2, what="the long job to be under way", timeout=120)
    sent_at = status(server, long)["step"]
    short = submit(server, "a red apple", SHORT_STEPS)
    followed = events(server, short)
    long_then = status(server, long)
    names = [name for name, _ in followed]
    assert names[-1] == "done" and followed[-1][1]["status"] == "done", names
    steps = [body["step"] for name, body in followed if name == "job" and body["status"] == "running"]
    assert steps and max(step or 0 for step in steps) <= SHORT_STEPS
    assert long_then["status"] == "running", "the short job ended while the long one still ran"
    assert long_then["step"] - sent_at <= SHORT_STEPS + 6, f"it joined within a step or two: {sent_at} -> {long_then}"
    wait_until(lambda: status(server, long)["status"] == "done", what="the long job to end", timeout=300)
