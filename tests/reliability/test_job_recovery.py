"""Async jobs outlive their server: ``kill -9`` with jobs running and queued, then a restart on the same
data directory, and every accepted job ends (done, or ``interrupted`` once its attempts are used up),
each done job charged exactly once and every hold of the killed run refunded. A clean stop (SIGTERM)
gives its running jobs back to the queue without counting the interrupted run as an attempt."""

from __future__ import annotations

import base64
import io
import signal
import subprocess
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy import func, select

from limner.accounts import credits, tokens
from limner.accounts.models import LedgerEntry, Reservation, to_micros
from limner.accounts.service import Accounts
from limner.settings import Settings
from tests.reliability.test_kill9 import server as limner_serve
from tests.support.accounts import bearer
from tests.support.waiting import wait_until

PRICE = 2.0
START = 40.0
DELAY = 2.0
"""Seconds per image of the slow model: long enough to kill a server mid-run, short enough for a quick test."""
WORKERS = 2
STARTUP = 60.0
FINISH = 60.0
"""Generous deadline for the restarted server to end every job."""


def write_config(root: Path) -> Path:
    config = root / "limner.toml"
    config.write_text(
        f'data_dir = "{root / "data"}"\n'
        'default_model = "slow"\n\n'
        f'[[models]]\nid = "slow"\nengine = "testpattern"\nprice_per_image = {PRICE}\nmax_queue = 16\n'
        f"options = {{ delay = {DELAY} }}\n"
    )
    return config


def server(config: Path, log: Path, **env: str) -> AbstractContextManager[tuple[str, subprocess.Popen[bytes]]]:
    """``limner serve`` in its own process, with a small job pool that looks for work often."""
    return limner_serve(config, log, LIMNER_JOB_WORKERS=str(WORKERS), LIMNER_JOB_POLL_SECONDS="0.1", **env)


def submit(url: str, token: str, prompt: str) -> str:
    body = {"prompt": prompt, "model": "slow", "size": "64x64", "response_format": "b64_json"}
    headers = {**bearer(token), "Prefer": "respond-async"}
    response = httpx.post(url + "/v1/images/generations", json=body, headers=headers, timeout=30)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued"
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    return str(job["id"])


def job(url: str, token: str, job_id: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/v1/jobs/{job_id}", headers=bearer(token), timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def running(url: str, token: str) -> list[str]:
    response = httpx.get(url + "/v1/jobs?status=running", headers=bearer(token), timeout=10)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["data"]]


def finish(url: str, token: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Every job, once all have ended (a job stuck queued or running fails the wait)."""
    ended: dict[str, dict[str, Any]] = {}

    def all_ended() -> bool:
        for job_id in ids:
            if job_id not in ended:
                current = job(url, token, job_id)
                if current["status"] in ("done", "failed", "cancelled"):
                    ended[job_id] = current
        return len(ended) == len(ids)

    wait_until(all_ended, timeout=FINISH, what="every job to end")
    return ended


def assert_image(url: str, token: str, body: dict[str, Any]) -> None:
    """A done job's result is the synchronous response, and its image decodes (also from /result)."""
    assert body["error"] is None and body["result_status"] == 200, body
    data = body["result"]["data"]
    assert len(data) == 1
    with Image.open(io.BytesIO(base64.b64decode(data[0]["b64_json"]))) as image:
        assert image.size == (64, 64)
    result = httpx.get(f"{url}/v1/jobs/{body['id']}/result", headers=bearer(token), timeout=10)
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("application/json")
    assert result.json() == body["result"]


def prepare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Settings, str]:
    config = write_config(tmp_path)
    monkeypatch.setenv("LIMNER_CONFIG", str(config))
    settings = Settings()
    accounts = Accounts.open(settings)
    try:
        token = tokens.create_token(accounts.db, "alice").token
        credits.grant(accounts.db, "alice", to_micros(START))
    finally:
        accounts.db.dispose()
    return config, settings, token


def reservations(settings: Settings) -> dict[str, int]:
    accounts = Accounts.open(settings)
    try:
        with accounts.db.read() as session:
            rows = session.execute(select(Reservation.state, func.count()).group_by(Reservation.state)).all()
        return {str(state): int(count) for state, count in rows}
    finally:
        accounts.db.dispose()


def assert_ledger(settings: Settings, *, charged: int, refunded: int) -> None:
    """``charged`` reservations committed once each, ``refunded`` given back; the ledger adds up to the balance."""
    accounts = Accounts.open(settings)
    try:
        with accounts.db.read() as session:
            deltas = session.scalar(select(func.sum(LedgerEntry.delta)))
            settlements = session.execute(
                select(LedgerEntry.reservation_id, func.count())
                .where(LedgerEntry.kind.in_(["charge", "refund", "expire"]))
                .group_by(LedgerEntry.reservation_id)
            ).all()
        expected = to_micros(START - PRICE * charged)
        assert credits.balance(accounts.db, "alice") == expected == deltas
        assert sorted(count for _, count in settlements) == [1] * (charged + refunded), "each hold settled once"
    finally:
        accounts.db.dispose()
    states = reservations(settings)
    assert states.get("committed", 0) == charged, states
    assert sum(count for state, count in states.items() if state != "committed") == refunded, states
    assert states.get("held", 0) == 0, states


def kill_with_jobs_in_flight(
    url: str, process: subprocess.Popen[bytes], token: str, count: int, settings: Settings
) -> list[str]:
    """Submit ``count`` jobs; once ``WORKERS`` of them run (their credits held) and the rest wait, kill -9."""
    ids = [submit(url, token, f"a cat {n}") for n in range(count)]
    wait_until(lambda: len(running(url, token)) == WORKERS, timeout=30, what="the first jobs to run")
    wait_until(lambda: reservations(settings).get("held", 0) == WORKERS, timeout=30, what="their holds")
    queued = [job_id for job_id in ids if job(url, token, job_id)["status"] == "queued"]
    assert len(queued) == count - WORKERS
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    return ids


def test_jobs_of_a_killed_server_all_finish_after_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, settings, token = prepare(tmp_path, monkeypatch)
    log = tmp_path / "server.log"
    count = 4
    with server(config, log) as (url, process):
        ids = kill_with_jobs_in_flight(url, process, token, count, settings)
        interrupted = set(ids[:WORKERS])  # claimed oldest first
    assert reservations(settings) == {"held": WORKERS}, "the killed process left its holds behind"

    with server(config, log) as (url, _):
        ended = finish(url, token, ids)
        for job_id, body in ended.items():
            assert body["status"] == "done", body
            assert_image(url, token, body)
            assert body["attempts"] == (2 if job_id in interrupted else 1), body
        listed = httpx.get(url + "/v1/jobs?status=queued,running", headers=bearer(token), timeout=10)
        assert listed.json()["data"] == []

    assert_ledger(settings, charged=count, refunded=WORKERS)


def test_a_job_interrupted_max_attempts_times_fails_refunded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, settings, token = prepare(tmp_path, monkeypatch)
    log = tmp_path / "server.log"
    count = 3
    with server(config, log, LIMNER_JOB_MAX_ATTEMPTS="1") as (url, process):
        ids = kill_with_jobs_in_flight(url, process, token, count, settings)
        interrupted = set(ids[:WORKERS])

    with server(config, log, LIMNER_JOB_MAX_ATTEMPTS="1") as (url, _):
        ended = finish(url, token, ids)
        for job_id in interrupted:
            body = ended[job_id]
            assert body["status"] == "failed", body
            assert body["error"] == "interrupted"
            assert body["error_message"] == (
                "The server running this job stopped 1 time(s); it was not retried again and nothing was charged."
            )
            assert body["attempts"] == 1
            assert body["result"] is None and body["result_url"] is None
            missing = httpx.get(f"{url}/v1/jobs/{job_id}/result", headers=bearer(token), timeout=10)
            assert missing.status_code == 404
            assert missing.json()["error"]["message"] == f"Job '{job_id}' has no result (status: failed)."
        (survivor,) = set(ids) - interrupted
        assert ended[survivor]["status"] == "done", ended[survivor]
        assert ended[survivor]["attempts"] == 1
        assert_image(url, token, ended[survivor])

    assert_ledger(settings, charged=1, refunded=WORKERS)


def test_a_clean_stop_gives_running_jobs_back_without_an_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, settings, token = prepare(tmp_path, monkeypatch)
    log = tmp_path / "server.log"
    with server(config, log) as (url, process):
        ids = [submit(url, token, f"a dog {n}") for n in range(WORKERS)]
        wait_until(lambda: len(running(url, token)) == WORKERS, timeout=30, what="the jobs to run")
        wait_until(lambda: reservations(settings).get("held", 0) == WORKERS, timeout=30, what="their holds")
        process.send_signal(signal.SIGTERM)
        # uvicorn ends by raising the signal it caught again: a clean stop either way
        assert process.wait(30) in (0, -signal.SIGTERM), log.read_text()[-3000:]
        assert "Application shutdown complete." in log.read_text()
    assert reservations(settings).get("held", 0) == 0, "a clean stop refunds its own holds"

    with server(config, log) as (url, _):
        ended = finish(url, token, ids)
        for body in ended.values():
            assert body["status"] == "done", body
            assert body["attempts"] == 1, "the run a clean stop interrupted is not an attempt"
            assert_image(url, token, body)

    assert_ledger(settings, charged=WORKERS, refunded=WORKERS)
