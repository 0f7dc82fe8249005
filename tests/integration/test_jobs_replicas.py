"""Two replicas (``limner serve`` processes with their own data directories) sharing one PostgreSQL
database, one signing secret and one consumer's token: an async job is one job on either of them (read,
listed, followed and cancelled anywhere), a replica's death never loses the job it ran (the other one
finishes it, charged once), and an Idempotency-Key answered by one replica is replayed by the other."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy import func, select, update

from limner.accounts import credits, tokens
from limner.accounts.models import Instance, JobRecord, Reservation, to_micros
from limner.accounts.service import Accounts
from limner.cli.local_services import Postgres
from limner.settings import Settings
from tests.reliability.test_kill9 import free_port, up
from tests.support.accounts import bearer
from tests.support.replicas import Replica
from tests.support.waiting import wait_until

PRICE = 2.0
START = 100.0
SLOW_DELAY = 2.0
"""Seconds the slow model takes per image: a job that is running when a replica is killed."""
STARTUP = 60.0


@dataclass
class Cluster:
    a: Replica
    b: Replica
    token: str
    accounts: Accounts
    spawn: Callable[[str], Replica]

    def restart(self, replica: Replica) -> None:
        """A fresh process in a dead replica's place (same data directory)."""
        fresh = started(self.spawn(replica.name))
        if replica is self.a:
            self.a = fresh
        else:
            self.b = fresh

    def other(self, replica: Replica) -> Replica:
        return self.b if replica is self.a else self.a

    def runner_of(self, job_id: str) -> Replica | None:
        """The replica whose process runs the job now (None while it is not running)."""
        with self.accounts.db.read() as session:
            pid = session.scalar(
                select(Instance.pid)
                .join(JobRecord, JobRecord.instance_id == Instance.id)
                .where(JobRecord.id == job_id, JobRecord.status == "running")
            )
        return next((r for r in (self.a, self.b) if r.process.pid == pid), None)

    def held(self) -> int:
        with self.accounts.db.read() as session:
            return int(session.scalar(select(func.count()).where(Reservation.state == "held")) or 0)

    def reservations(self) -> dict[str, int]:
        with self.accounts.db.read() as session:
            rows = session.execute(select(Reservation.state, func.count()).group_by(Reservation.state)).all()
        return {str(state): int(count) for state, count in rows}

    def balance(self) -> int:
        return credits.balance(self.accounts.db, "alice") or 0

    def jobs_running(self) -> int:
        with self.accounts.db.read() as session:
            return int(session.scalar(select(func.count()).where(JobRecord.status == "running")) or 0)


def write_config(root: Path) -> Path:
    config = root / "limner.toml"
    config.write_text(
        'default_model = "fast"\n\n'
        f'[[models]]\nid = "fast"\nengine = "testpattern"\nprice_per_image = {PRICE}\n\n'
        f'[[models]]\nid = "slow"\nengine = "testpattern"\nprice_per_image = {PRICE}\n'
        f"options = {{ delay = {SLOW_DELAY} }}\n\n"
        f'[[models]]\nid = "endless"\nengine = "testpattern"\nprice_per_image = {PRICE}\n'
        "options = { delay = 600.0 }\n"
    )
    return config


def start(name: str, root: Path, config: Path, database_url: str) -> Replica:
    """A replica: its own data directory and port; the shared database and signing secret."""
    port = free_port()
    env = {
        **os.environ,
        "LIMNER_CONFIG": str(config),
        "LIMNER_DATA_DIR": str(root / name),
        "LIMNER_DATABASE_URL": database_url,
        "LIMNER_SIGNING_SECRET": "replicas-share-this-secret",
        "LIMNER_JOB_WORKERS": "2",
        "LIMNER_JOB_POLL_SECONDS": "0.1",
    }
    log = root / f"{name}.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "limner.cli", "serve", "--port", str(port)], env=env, stdout=out, stderr=out
        )
    return Replica(name, f"http://127.0.0.1:{port}", process, log)


def stop(replica: Replica) -> None:
    if replica.process.poll() is None:
        replica.process.send_signal(signal.SIGTERM)
        try:
            replica.process.wait(30)
        except subprocess.TimeoutExpired:
            replica.process.kill()
            replica.process.wait(10)


def started(replica: Replica) -> Replica:
    wait_until(
        lambda: replica.process.poll() is not None or up(replica.url),
        timeout=STARTUP,
        what=f"replica {replica.name} to start",
    )
    assert replica.process.poll() is None, replica.tail()
    return replica


@pytest.fixture(scope="module")
def cluster(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One pair of replicas for the module (starting processes is what takes time); tests count
    charges and reservations from where the previous test left them."""
    root = tmp_path_factory.mktemp("replicas")
    database_url = postgres.new_database()
    config = write_config(root)
    settings = Settings(_env_file=None, data_dir=root / "admin", database_url=database_url)  # type: ignore[call-arg]
    accounts = Accounts.open(settings)
    token = tokens.create_token(accounts.db, "alice").token
    credits.grant(accounts.db, "alice", to_micros(START))
    pair = [start(name, root, config, database_url) for name in ("a", "b")]
    made = Cluster(pair[0], pair[1], token, accounts, lambda name: start(name, root, config, database_url))
    try:
        for replica in pair:
            started(replica)
        yield made
    finally:
        for replica in (made.a, made.b, *pair):
            stop(replica)
        accounts.db.dispose()


def submit(replica: Replica, token: str, model: str, **extra: str) -> httpx.Response:
    body = {"prompt": "a lighthouse", "model": model, "size": "64x64", "response_format": "b64_json"}
    headers = {**bearer(token), "Prefer": "respond-async", **extra}
    return httpx.post(replica.url + "/v1/images/generations", json=body, headers=headers, timeout=30)


def get_job(replica: Replica, token: str, job_id: str) -> dict[str, Any]:
    response = httpx.get(f"{replica.url}/v1/jobs/{job_id}", headers=bearer(token), timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ended(replica: Replica, token: str, job_id: str, timeout: float = 30) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def finished() -> bool:
        seen.update(get_job(replica, token, job_id))
        return seen["status"] in ("done", "failed", "cancelled")

    wait_until(finished, timeout=timeout, what=f"job {job_id} to end")
    return seen


def decode(result: dict[str, Any]) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(result["data"][0]["b64_json"])))
    image.load()
    return image


def events(replica: Replica, token: str, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The job's server-sent events, read until the stream ends."""
    found: list[tuple[str, dict[str, Any]]] = []
    name = ""
    url = f"{replica.url}/v1/jobs/{job_id}/events"
    with httpx.stream("GET", url, headers=bearer(token), timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                found.append((name, json.loads(line.removeprefix("data: "))))
    return found


def added(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Reservations a test made, by state."""
    return {state: after.get(state, 0) - before.get(state, 0) for state in after if after[state] != before.get(state)}


def test_a_job_submitted_on_one_replica_is_read_listed_and_followed_on_the_other(cluster: Cluster) -> None:
    a, b, token = cluster.a, cluster.b, cluster.token
    balance = cluster.balance()
    accepted = submit(a, token, "slow")
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]

    following = events(b, token, job_id)  # B streams the job A accepted, until it ends
    names = [name for name, _ in following]
    assert names[0] == "job" and names[-1] == "done", names
    assert "preview" not in names
    statuses = [body["status"] for name, body in following if name == "job"]
    assert "running" in statuses
    done = following[-1][1]
    assert done["id"] == job_id and done["status"] == "done" and done["attempts"] == 1
    assert decode(done["result"]).size == (64, 64)

    on_b = get_job(b, token, job_id)
    assert on_b == get_job(a, token, job_id)
    assert on_b["result"] == done["result"] and on_b["result_url"] == f"/v1/jobs/{job_id}/result"
    result = httpx.get(f"{b.url}/v1/jobs/{job_id}/result", headers=bearer(token), timeout=10)
    assert result.status_code == 200 and result.json() == done["result"]
    listed = httpx.get(b.url + "/v1/jobs?status=done&limit=1", headers=bearer(token), timeout=10)
    assert listed.status_code == 200
    assert [item["id"] for item in listed.json()["data"]] == [job_id]
    assert listed.json()["data"][0]["result"] is None, "lists carry no results"
    wait_until(lambda: cluster.held() == 0, what="the charge, committed just after the result is stored")
    assert cluster.balance() == balance - to_micros(PRICE)


def test_cancelling_on_one_replica_stops_the_job_the_other_runs_and_refunds_it(cluster: Cluster) -> None:
    token = cluster.token
    balance, before = cluster.balance(), cluster.reservations()
    accepted = submit(cluster.a, token, "endless")
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    wait_until(lambda: cluster.runner_of(job_id) is not None, timeout=30, what="a replica to run the job")
    wait_until(lambda: cluster.held() == 1, timeout=30, what="its credits to be held")
    running_on = cluster.runner_of(job_id)
    assert running_on is not None
    elsewhere = cluster.other(running_on)

    cancelled = httpx.delete(f"{elsewhere.url}/v1/jobs/{job_id}", headers=bearer(token), timeout=30)
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert body["status"] == "cancelled", body
    assert body["error"] == "cancelled" and body["error_message"] == "Cancelled by its owner."
    assert body["result"] is None and body["result_url"] is None
    wait_until(lambda: cluster.held() == 0, what="the hold to be settled")
    assert added(before, cluster.reservations()) == {"refunded": 1}
    assert cluster.balance() == balance
    assert get_job(running_on, token, job_id)["status"] == "cancelled"
    assert running_on.process.poll() is None, running_on.tail()


def test_an_idempotency_key_answered_by_one_replica_is_replayed_by_the_other(cluster: Cluster) -> None:
    a, b, token = cluster.a, cluster.b, cluster.token
    balance, before = cluster.balance(), cluster.reservations()
    body = {"prompt": "a harbour", "model": "fast", "size": "64x64", "response_format": "b64_json"}
    headers = {**bearer(token), "Idempotency-Key": "harbour-1"}
    first = httpx.post(a.url + "/v1/images/generations", json=body, headers=headers, timeout=30)
    assert first.status_code == 200, first.text
    assert "idempotent-replayed" not in first.headers
    again = httpx.post(b.url + "/v1/images/generations", json=body, headers=headers, timeout=30)
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert decode(again.json()).size == (64, 64)

    other = {**body, "prompt": "another harbour"}
    reused = httpx.post(b.url + "/v1/images/generations", json=other, headers=headers, timeout=30)
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    assert reused.json()["error"]["message"] == (
        "Idempotency-Key 'harbour-1' was already used with a different request; send a new key for a new request."
    )

    queued = submit(a, token, "fast", **{"Idempotency-Key": "harbour-async"})
    assert queued.status_code == 202, queued.text
    retried = submit(b, token, "fast", **{"Idempotency-Key": "harbour-async"})
    assert retried.status_code == 202
    assert retried.headers["idempotent-replayed"] == "true"
    assert retried.json()["id"] == queued.json()["id"]
    assert ended(b, token, retried.json()["id"])["status"] == "done"
    wait_until(lambda: cluster.held() == 0, what="the charge, committed just after the result is stored")

    assert added(before, cluster.reservations()) == {"committed": 2}
    assert cluster.balance() == balance - to_micros(2 * PRICE), "one charge per key, whichever replica answered"


def test_a_retry_on_the_other_replica_waits_for_the_first_request_and_gets_its_answer(cluster: Cluster) -> None:
    """The replicas share only the database: the waiter on ``b`` reads the row again, with a backoff."""
    a, b, token = cluster.a, cluster.b, cluster.token
    body = {"prompt": "a tide", "model": "slow", "size": "64x64", "response_format": "b64_json"}
    headers = {**bearer(token), "Idempotency-Key": "tide-1"}

    def post(replica: Replica) -> httpx.Response:
        return httpx.post(replica.url + "/v1/images/generations", json=body, headers=headers, timeout=30)

    def running() -> bool:
        with cluster.accounts.db.read() as session:
            status = session.scalar(select(JobRecord.status).where(JobRecord.idempotency_key == "tide-1"))
        return status == "running"

    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(post, a)
        wait_until(running, what="the first request running on a")
        again = post(b)  # sent while the first runs (it takes SLOW_DELAY)
        answered = first.result()
    assert answered.status_code == 200 and "idempotent-replayed" not in answered.headers, answered.text
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == answered.content


def test_a_run_whose_job_was_taken_over_is_not_charged(cluster: Cluster) -> None:
    """A replica taken for dead (a stall longer than its lease) while it ran a job: the job was queued
    again elsewhere, so the late run's response is not the job's, and its hold is refunded, not charged."""
    token = cluster.token
    balance, before = cluster.balance(), cluster.reservations()
    accepted = submit(cluster.a, token, "slow")
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    wait_until(lambda: cluster.runner_of(job_id) is not None, timeout=30, what="a replica to run the job")
    first = cluster.runner_of(job_id)
    assert first is not None
    with cluster.accounts.db.write() as session:  # what a recovery elsewhere leaves: not this run's any more
        session.execute(update(JobRecord).where(JobRecord.id == job_id).values(instance_id="gone-" + "0" * 27))

    body = ended(cluster.other(first), token, job_id)
    assert body["status"] == "done", body
    assert body["attempts"] == 2, "the orphaned run was found (no instance holds it) and run again"
    assert decode(body["result"]).size == (64, 64)
    wait_until(lambda: cluster.held() == 0, what="both runs' holds to be settled")
    assert added(before, cluster.reservations()) == {"committed": 1, "refunded": 1}
    assert cluster.balance() == balance - to_micros(PRICE), "charged once"
    assert first.process.poll() is None, first.tail()


def test_a_killed_replicas_job_is_finished_by_the_other_charged_once(cluster: Cluster) -> None:
    token = cluster.token
    before = cluster.reservations()
    # exactly one image's worth left: the rerun only fits once the dead run's hold is refunded
    credits.grant(cluster.accounts.db, "alice", to_micros(PRICE) - cluster.balance())
    accepted = submit(cluster.a, token, "slow")
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    wait_until(lambda: cluster.runner_of(job_id) is not None, timeout=30, what="a replica to run the job")
    wait_until(lambda: cluster.held() == 1, timeout=30, what="its credits to be held")
    victim = cluster.runner_of(job_id)
    assert victim is not None
    survivor = cluster.other(victim)
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(10)

    body = ended(survivor, token, job_id)
    assert body["status"] == "done", body
    assert body["attempts"] == 2
    assert decode(body["result"]).size == (64, 64)
    wait_until(lambda: cluster.held() == 0, what="the charge, committed just after the result is stored")
    assert added(before, cluster.reservations()) == {"committed": 1, "expired": 1}
    assert cluster.balance() == 0, "charged exactly once"
    credits.grant(cluster.accounts.db, "alice", to_micros(START))
    cluster.restart(victim)
