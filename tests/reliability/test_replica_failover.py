"""Two ``limner serve`` replicas over one PostgreSQL, one Redis and one S3 bucket: ``kill -9`` one of them
under load and nothing is lost or charged twice, and a rate limit is one limit whichever replica is hit.

Under load, eight clients send synchronous requests, each with its own ``Idempotency-Key``, alternating
replicas; async jobs are submitted to replica A. A is killed while it generates requests and runs jobs.
A client whose request failed (a broken connection, a 5xx) sends the same request with the same key to
B. Then: every logical request ended with a 200 whose images decode; the consumer was charged once per
key (ledger, balance and usage rows agree); every image link either replica returned, A's included, is
served by B (the media is in the bucket, the links signed with the shared secret); and B recovered A's
jobs (A's lock file on this host shows it dead), ran them and answers them.
"""

from __future__ import annotations

import base64
import io
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from limner.accounts.models import to_micros
from tests.support.accounts import bearer
from tests.support.replicas import Backends, Replica, SharedDatabase, backends, replicas
from tests.support.waiting import wait_until

PRICE = 1.0
START = 1000.0
CLIENTS = 8
AFTER_KILL = 2
"""Logical requests each client still starts once A is dead (those addressed to A fail over to B)."""
MOST_PER_CLIENT = 200
"""A bound on each client's requests, should the kill never come (the test then fails on its wait)."""
JOBS = 8
"""Async jobs submitted to A: two run on A, two on B, the rest wait in the queue (two workers per replica)."""
RETRIES = 3
"""Tries on B after a failure on A (a retry may also find B busy recovering A's keys)."""
SIZE = (64, 64)
DEADLINE = 60.0

CATALOG = f"""
default_model = "pattern"

[[models]]
id = "pattern"
engine = "testpattern"
price_per_image = {PRICE}
max_concurrency = 4
max_queue = 64
options = {{ delay = 0.3 }}

[[models]]
id = "slow"
engine = "testpattern"
price_per_image = {PRICE}
max_concurrency = 2
max_queue = 16
options = {{ delay = 2.0 }}
"""
FAST_RECOVERY = {
    "LIMNER_JOB_WORKERS": "2",
    "LIMNER_JOB_POLL_SECONDS": "0.1",
    "LIMNER_RESERVATION_SWEEP_SECONDS": "1",  # B refunds A's holds within a second, not a minute
}


@pytest.fixture(scope="module")
def shared() -> Iterator[Backends]:
    with backends() as started:
        yield started


@dataclass
class Cluster:
    db: SharedDatabase
    database_url: str
    env: dict[str, str]


@pytest.fixture
def cluster(shared: Backends, tmp_path: Path) -> Iterator[Cluster]:
    """A fresh database and bucket on the shared servers, and the environment every replica gets."""
    config = tmp_path / "limner.toml"
    config.write_text(CATALOG)
    database_url = shared.postgres.new_database()
    env = shared.replica_env(
        config, secrets.token_urlsafe(32), database_url=database_url, bucket=shared.s3.new_bucket()
    )
    db = SharedDatabase(database_url, tmp_path / "operator")
    try:
        yield Cluster(db, database_url, {**env, **FAST_RECOVERY})
    finally:
        db.close()


# --- the clients ---------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One logical request: every try (replica and what came back), and the answer it ended with."""

    key: str
    tries: list[str] = field(default_factory=list)
    response: httpx.Response | None = None
    answered_by: str | None = None


@dataclass
class Load:
    a: Replica
    b: Replica
    token: str
    killed: threading.Event = field(default_factory=threading.Event)
    outcomes: list[Outcome] = field(default_factory=list)
    served_by_a: list[str] = field(default_factory=list)
    """Image links A returned to a client, before it died."""

    def client(self, index: int) -> None:
        """Requests in sequence, alternating replicas, each under its own key; after a failure, the same
        request with the same key on B."""
        started_after_kill = 0
        with httpx.Client(timeout=DEADLINE, headers=bearer(self.token)) as http:
            for n in range(MOST_PER_CLIENT):
                if self.killed.is_set():
                    if started_after_kill == AFTER_KILL:
                        return
                    started_after_kill += 1
                outcome = Outcome(f"load-{index}-{n}")
                self.outcomes.append(outcome)
                first = self.a if (index + n) % 2 == 0 else self.b
                for replica in [first] + [self.b] * RETRIES:
                    if self.send(http, replica, outcome):
                        break

    def send(self, http: httpx.Client, replica: Replica, outcome: Outcome) -> bool:
        """One try; True once it got an answer a retry would not change."""
        body = {"prompt": outcome.key, "model": "pattern", "size": "64x64", "response_format": "url"}
        try:
            response = http.post(
                replica.url + "/v1/images/generations", json=body, headers={"Idempotency-Key": outcome.key}
            )
        except httpx.TransportError as exc:
            outcome.tries.append(f"{replica.name}: {type(exc).__name__}")
            return False
        replayed = " (replayed)" if response.headers.get("idempotent-replayed") == "true" else ""
        outcome.tries.append(f"{replica.name}: {response.status_code}{replayed}")
        if response.status_code >= 500:
            return False
        outcome.response, outcome.answered_by = response, replica.name
        if replica is self.a and response.status_code == 200:
            self.served_by_a.extend(item["url"] for item in response.json()["data"])
        return True


def submit(url: str, token: str, key: str) -> httpx.Response:
    body = {"prompt": key, "model": "slow", "size": "64x64", "response_format": "url"}
    headers = {**bearer(token), "Prefer": "respond-async", "Idempotency-Key": key}
    return httpx.post(url + "/v1/images/generations", json=body, headers=headers, timeout=30)


def fetch_image(replica: Replica, link: str) -> None:
    """A link any replica handed out, fetched from ``replica``: its path and signature are all it needs."""
    path = httpx.URL(link).raw_path.decode()
    assert path.startswith("/media/"), link
    served = httpx.get(replica.url + path, timeout=30)
    assert served.status_code == 200, (link, served.status_code, served.text[:300])
    assert served.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(served.content)) as image:
        assert image.size == SIZE


def job_of(replica: Replica, token: str, job_id: str) -> dict[str, Any]:
    response = httpx.get(f"{replica.url}/v1/jobs/{job_id}", headers=bearer(token), timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# --- the tests -----------------------------------------------------------------------------------------------


def test_a_replica_killed_under_load_loses_nothing_and_charges_once(cluster: Cluster, tmp_path: Path) -> None:
    db = cluster.db
    alice = db.provision("alice", START)  # the synchronous load
    bob = db.provision("bob", START)  # the async jobs
    with replicas(cluster.env, tmp_path, ["a", "b"]) as (a, b):
        wait_until(lambda: db.instance_of(a.process.pid) is not None, what="A's lease")
        a_instance = db.instance_of(a.process.pid)
        assert a_instance is not None
        a_lock = tmp_path / "replica-a" / "instances" / f"{a_instance}.lock"
        assert a_lock.exists()

        load = Load(a, b, alice)
        clients = [threading.Thread(target=load.client, args=(i,), name=f"client-{i}") for i in range(CLIENTS)]
        for thread in clients:
            thread.start()
        wait_until(lambda: len(load.served_by_a) >= 4, timeout=DEADLINE, what="A to answer some of the load")
        accepted = [submit(a.url, bob, f"job-{n}") for n in range(JOBS)]
        assert [response.status_code for response in accepted] == [202] * JOBS, [r.text for r in accepted]
        job_ids = [response.json()["id"] for response in accepted]

        def mid_run() -> bool:
            """A is generating synchronous requests and running jobs, while other jobs wait for a worker."""
            return (
                db.held(instance=a_instance, model="pattern") >= 1
                and bool(db.running_jobs_on(a_instance))
                and "queued" in db.job_states(job_ids).values()
            )

        wait_until(mid_run, timeout=DEADLINE, what="A to be busy with requests and jobs, and jobs to be queued")
        running_on_a = db.running_jobs_on(a_instance)
        a.kill()
        load.killed.set()
        running_on_a |= db.running_jobs_on(a_instance)  # claimed in the moment before the kill, unless B was quicker

        # A's jobs are B's now; the same key on B answers the same job (Idempotent-Replayed).
        again = submit(b.url, bob, "job-0")
        assert again.status_code == 202 and again.json()["id"] == job_ids[0]
        assert again.headers["idempotent-replayed"] == "true"

        for thread in clients:
            thread.join(DEADLINE * (RETRIES + 1))
            assert not thread.is_alive(), f"{thread.name} never finished"

        # Every logical request ended with a 200 whose images decode, served by B.
        failed = [(o.key, o.tries) for o in load.outcomes if o.response is None or o.response.status_code != 200]
        assert failed == [], f"lost requests: {failed}\n{a.problems()}\n{b.problems()}"
        keys = {outcome.key for outcome in load.outcomes}
        assert len(keys) == len(load.outcomes) > CLIENTS * AFTER_KILL
        assert any(len(outcome.tries) > 1 for outcome in load.outcomes), "some request failed over to B"
        links = [item["url"] for o in load.outcomes if o.response is not None for item in o.response.json()["data"]]
        assert len(links) == len(keys)
        for link in {*links, *load.served_by_a}:
            fetch_image(b, link)

        # B recovered A's jobs: every job done, readable from B, its image served by B.
        ended: dict[str, dict[str, Any]] = {}

        def all_done() -> bool:
            for job_id in job_ids:
                if job_id not in ended:
                    body = job_of(b, bob, job_id)
                    if body["status"] in ("done", "failed", "cancelled"):
                        ended[job_id] = body
            return len(ended) == JOBS

        wait_until(all_done, timeout=DEADLINE, what="B to finish every job, A's included")
        for body in ended.values():
            assert body["status"] == "done" and body["error"] is None, f"{body}\n{a.problems()}\n{b.problems()}"
            assert body["result_status"] == 200
            (item,) = body["result"]["data"]
            fetch_image(b, item["url"])
        interrupted = {job_id for job_id, body in ended.items() if body["attempts"] == 2}
        assert interrupted, "A was running jobs when it died"
        assert interrupted <= running_on_a, (interrupted, running_on_a)
        assert {body["attempts"] for body in ended.values()} <= {1, 2}

        # B saw A dead by its lock file, refunded A's holds and forgot it (the file too).
        wait_until(lambda: db.held() == 0, timeout=DEADLINE, what="B to refund the holds A left behind")
        wait_until(lambda: a_instance not in db.instances(), timeout=DEADLINE, what="B to forget A")
        assert not a_lock.exists()
        b_instance = db.instance_of(b.process.pid)
        assert db.instances() == {b_instance}

    # No double charge: each charge its own reservation, the ledger adds up, a paid usage row per charge.
    sync = db.ledger("alice")
    assert sync.charges == sync.charged_reservations == sync.reservations.get("committed"), sync
    assert sync.balance == sync.deltas == to_micros(START - PRICE * sync.charges), sync
    assert sync.charged_amount == to_micros(PRICE * sync.charges)
    assert sync.reservations.get("held", 0) == 0
    assert sync.paid_usage_rows == sync.charges, sync
    # One charge per key that succeeded: a kept answer and its charge are written in one transaction.
    assert sync.charges == len(keys), (len(keys), sync)

    jobs = db.ledger("bob")
    assert jobs.charges == jobs.charged_reservations == jobs.reservations.get("committed"), jobs
    assert jobs.balance == jobs.deltas == to_micros(START - PRICE * jobs.charges), jobs
    assert set(jobs.reservations) <= {"committed", "expired"}, jobs.reservations
    assert jobs.paid_usage_rows == jobs.charges, jobs
    assert jobs.charges == JOBS, jobs  # each job charged once, its result stored with its charge
    # A job A had claimed but not yet reserved credits for when it died has no hold to refund.
    assert jobs.reservations.get("expired", 0) <= len(interrupted), jobs


def test_a_replica_killed_while_keeping_an_answer_keeps_nothing_and_the_retry_is_charged_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Deterministic: the test holds the usage table locked, so A's one transaction that keeps the answer
    and charges it (with its usage row) waits; A is killed there and the lock released. Nothing of it may
    remain: the retry on B runs afresh (no replay of an answer nobody paid for) and is charged once."""
    psycopg = pytest.importorskip("psycopg")
    db = cluster.db
    carol = db.provision("carol", START)
    key = "kept-then-killed"
    body = {"prompt": key, "model": "pattern", "size": "64x64", "response_format": "url"}
    headers = {**bearer(carol), "Idempotency-Key": key}
    with replicas(cluster.env, tmp_path, ["a", "b"]) as (a, b):
        wait_until(lambda: db.instance_of(a.process.pid) is not None, what="A's lease")
        a_instance = db.instance_of(a.process.pid)
        assert a_instance is not None
        first: list[httpx.Response | httpx.TransportError] = []

        def send_to_a() -> None:
            try:
                first.append(httpx.post(a.url + "/v1/images/generations", json=body, headers=headers, timeout=60))
            except httpx.TransportError as exc:
                first.append(exc)

        def waiting_on_the_lock(probe: Any) -> bool:
            return bool(probe.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()[0])

        with psycopg.connect(cluster.database_url) as lock:
            lock.execute("LOCK TABLE usage IN EXCLUSIVE MODE")
            client = threading.Thread(target=send_to_a)
            client.start()
            with psycopg.connect(cluster.database_url, autocommit=True) as probe:
                wait_until(lambda: waiting_on_the_lock(probe), timeout=DEADLINE, what="A to keep and charge")
            assert db.keyed("carol", key) == ("running", None), "nothing kept before its charge commits"
            assert db.held(instance=a_instance) == 1
            a.kill()
            lock.rollback()
        client.join(DEADLINE)
        (answer,) = first
        assert isinstance(answer, httpx.TransportError), answer  # A died before it could answer

        retried = httpx.post(b.url + "/v1/images/generations", json=body, headers=headers, timeout=60)
        assert retried.status_code == 200, retried.text
        assert "idempotent-replayed" not in retried.headers, "run afresh: A kept nothing"
        (item,) = retried.json()["data"]
        fetch_image(b, item["url"])
        wait_until(lambda: db.held() == 0, timeout=DEADLINE, what="B to refund the hold A left behind")

    ledger = db.ledger("carol")
    assert ledger.charges == 1, ledger
    assert ledger.balance == to_micros(START - PRICE)
    assert ledger.paid_usage_rows == 1


RPM = 3
RATE_MESSAGE = re.compile(rf"^Rate limit reached \({RPM} requests/min per model\); retry in \d+\.\d s\.$")


def test_a_rate_limit_is_one_limit_across_replicas(cluster: Cluster, tmp_path: Path) -> None:
    token = cluster.db.provision("hasty", START, rpm=RPM)
    body = {"prompt": "a kite", "model": "pattern", "size": "64x64", "response_format": "b64_json"}
    with replicas(cluster.env, tmp_path, ["a", "b"]) as (a, b):

        def openai(replica: Replica) -> httpx.Response:
            return httpx.post(replica.url + "/v1/images/generations", json=body, headers=bearer(token), timeout=30)

        allowed = [openai(replica) for replica in (a, b, a)]
        assert [response.status_code for response in allowed] == [200] * RPM, [r.text for r in allowed]
        for response in allowed:
            (item,) = response.json()["data"]
            with Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))) as image:
                assert image.size == SIZE

        refused = openai(b)  # the (N+1)th in the minute, on the replica that saw one of the N
        assert refused.status_code == 429, refused.text
        error = refused.json()["error"]
        assert (error["code"], error["type"], error["param"]) == ("rate_limit_exceeded", "requests", None)
        assert RATE_MESSAGE.match(error["message"]), error["message"]
        assert 1 <= int(refused.headers["retry-after"]) <= 60 // RPM

        milady = httpx.post(
            a.url + "/api/v1/generate-image",
            json={"prompt": "a kite", "model": "pattern"},
            headers=bearer(token),
            timeout=30,
        )
        assert milady.status_code == 429, milady.text
        payload = milady.json()
        assert set(payload) == {"error", "code", "retryAfter"}
        assert payload["code"] == "rate_limited"
        assert RATE_MESSAGE.match(payload["error"]), payload["error"]
        assert payload["retryAfter"] == int(milady.headers["retry-after"])
    assert cluster.db.ledger("hasty").charges == RPM, "refused requests are not charged"
