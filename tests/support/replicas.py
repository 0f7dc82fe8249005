"""Several ``limner serve`` processes over one PostgreSQL, one Redis and one S3 bucket (moto), as in
"Running several replicas" of the README, for the scale-out failure tests.

    with backends() as shared:                     # skips, saying why, without PostgreSQL or Redis
        env = shared.replica_env(config, secret)   # LIMNER_* every replica gets
        with replicas(env, tmp_path, ["a", "b"]) as (a, b):
            a.kill()                               # SIGKILL: no clean stop, no lease released

Consumers are provisioned and the ledger read straight from the shared database, as an operator's
``limner consumers`` / ``limner credits`` would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from limner.accounts import credits, tokens
from limner.accounts.models import Consumer, Instance, JobRecord, LedgerEntry, Reservation, UsageRecord, to_micros
from limner.accounts.service import Accounts
from limner.cli.local_services import Postgres, S3Server, free_port, postgres_server, redis_server, s3_server
from limner.settings import Settings
from tests.support.waiting import wait_until

STARTUP = 90.0
"""Seconds a replica may take to answer /health (two start at once on a small machine)."""


@dataclass(frozen=True)
class Backends:
    postgres: Postgres
    redis_url: str
    s3: S3Server

    def replica_env(self, config: Path, signing_secret: str, *, database_url: str, bucket: str) -> dict[str, str]:
        """What every replica shares: the catalog, the database, Redis, the bucket and the signing secret."""
        return {
            "LIMNER_CONFIG": str(config),
            "LIMNER_DATABASE_URL": database_url,
            "LIMNER_REDIS_URL": self.redis_url,
            "LIMNER_MEDIA_STORE": "s3",
            "LIMNER_S3_BUCKET": bucket,
            "LIMNER_S3_ENDPOINT_URL": self.s3.endpoint_url,
            "LIMNER_S3_ACCESS_KEY_ID": self.s3.access_key_id,
            "LIMNER_S3_SECRET_ACCESS_KEY": self.s3.secret_access_key,
            "LIMNER_S3_PATH_STYLE": "true",
            "LIMNER_SIGNING_SECRET": signing_secret,
        }


@contextmanager
def backends() -> Iterator[Backends]:
    """PostgreSQL, Redis and moto's S3 server on loopback; ``pytest.skip`` (with the reason) when the first
    two cannot be started here, as the accounts tests do."""
    pytest.importorskip("moto.server", reason="moto[server] is installed by make setup (dev extra)")
    with ExitStack() as stack:
        postgres = stack.enter_context(postgres_server())
        if isinstance(postgres, str):
            pytest.skip(f"no PostgreSQL for the replica tests: {postgres}")
        redis_url = stack.enter_context(redis_server())
        if not redis_url.startswith("redis://"):
            pytest.skip(f"no Redis for the replica tests: {redis_url}")
        s3 = stack.enter_context(s3_server())
        yield Backends(postgres, redis_url, s3)


@dataclass
class Replica:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        """``kill -9``: the process gets no chance to stop its jobs, release its lease or flush anything."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def problems(self) -> str:
        """Its log's warnings and errors (with tracebacks), for a failing assertion's message."""
        lines = self.log.read_text(errors="replace").splitlines()
        kept = [line for line in lines if " INFO " not in line]
        return f"--- replica {self.name}:\n" + "\n".join(kept[-60:])


def up(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def replicas(env: dict[str, str], root: Path, names: list[str]) -> Iterator[list[Replica]]:
    """``limner serve`` per name, each with its own data directory (its own machine, but for the host
    name), started together; SIGTERM to the survivors on exit."""
    started: list[Replica] = []
    try:
        for name in names:
            port = free_port()
            data = root / f"replica-{name}"
            data.mkdir(parents=True, exist_ok=True)
            log = data / "server.log"
            environment = {**os.environ, **env, "LIMNER_DATA_DIR": str(data)}
            with open(log, "ab") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "limner.cli", "serve", "--port", str(port)],
                    env=environment,
                    stdout=out,
                    stderr=out,
                )
            started.append(Replica(name, f"http://127.0.0.1:{port}", process, log))
        for replica in started:
            wait_until(
                lambda r=replica: r.process.poll() is not None or up(r.url),  # type: ignore[misc]
                timeout=STARTUP,
                what=f"replica {replica.name} to start",
            )
            assert replica.process.poll() is None, replica.tail()
        yield started
    finally:
        for replica in started:
            if replica.process.poll() is None:
                replica.process.send_signal(signal.SIGTERM)
        for replica in started:
            try:
                replica.process.wait(30)
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait()


# --- the shared database, as an operator sees it ------------------------------------------------------------


class SharedDatabase:
    """The accounts database every replica uses, opened from the test (migrated on open)."""

    def __init__(self, database_url: str, data_dir: Path) -> None:
        self.accounts = Accounts.open(Settings(data_dir=data_dir, database_url=database_url))
        self.db = self.accounts.db

    def close(self) -> None:
        self.db.dispose()

    def provision(self, name: str, balance: float | None = None, *, rpm: int | None = None) -> str:
        """A consumer with a token (and credits when given); the token."""
        token = tokens.create_token(self.db, name, rpm=rpm).token
        if balance is not None:
            credits.grant(self.db, name, to_micros(balance))
        return token

    def instance_of(self, pid: int) -> str | None:
        """The lease id of the server process ``pid`` (None until it registered, or once it is forgotten)."""
        with self.db.read() as session:
            found = session.scalar(select(Instance.id).where(Instance.pid == pid))
            return None if found is None else str(found)

    def instances(self) -> set[str]:
        with self.db.read() as session:
            return {str(ident) for ident in session.scalars(select(Instance.id))}

    def held(self, *, instance: str | None = None, model: str | None = None) -> int:
        """Credit holds open right now (requests being generated), of one instance or model if given."""
        query = select(func.count()).where(Reservation.state == "held")
        if instance is not None:
            query = query.where(Reservation.instance_id == instance)
        if model is not None:
            query = query.where(Reservation.model == model)
        with self.db.read() as session:
            return int(session.scalar(query) or 0)

    def keyed(self, consumer: str, key: str) -> tuple[str, int | None] | None:
        """The row holding ``consumer``'s Idempotency-Key: its status and the status of the response it keeps."""
        with self.db.read() as session:
            row = session.execute(
                select(JobRecord.status, JobRecord.response_status).where(
                    JobRecord.consumer == consumer, JobRecord.idempotency_key == key
                )
            ).first()
            return None if row is None else (str(row.status), row.response_status)

    def job_states(self, ids: list[str]) -> dict[str, str]:
        with self.db.read() as session:
            rows = session.execute(select(JobRecord.id, JobRecord.status).where(JobRecord.id.in_(ids))).all()
            return {str(job_id): str(status) for job_id, status in rows}

    def running_jobs_on(self, instance: str) -> set[str]:
        """Async jobs the instance is running."""
        with self.db.read() as session:
            rows = session.scalars(
                select(JobRecord.id).where(
                    JobRecord.asynchronous, JobRecord.status == "running", JobRecord.instance_id == instance
                )
            )
            return {str(job_id) for job_id in rows}

    def ledger(self, name: str) -> Ledger:
        with self.db.read() as session:
            consumer_id = session.scalar(select(Consumer.id).where(Consumer.name == name))
            entries = session.execute(
                select(LedgerEntry.kind, LedgerEntry.delta, LedgerEntry.amount, LedgerEntry.reservation_id).where(
                    LedgerEntry.consumer_id == consumer_id
                )
            ).all()
            states = session.execute(
                select(Reservation.state, func.count())
                .where(Reservation.consumer_id == consumer_id)
                .group_by(Reservation.state)
            ).all()
            paid = session.scalar(select(func.count()).where(UsageRecord.consumer == name, UsageRecord.cost > 0))
        charges = [entry for entry in entries if entry.kind == "charge"]
        return Ledger(
            balance=credits.balance(self.db, name),
            deltas=sum(entry.delta for entry in entries),
            charges=len(charges),
            charged_reservations=len({entry.reservation_id for entry in charges}),
            charged_amount=sum(entry.amount for entry in charges),
            reservations={str(state): int(count) for state, count in states},
            paid_usage_rows=int(paid or 0),
        )


@dataclass(frozen=True)
class Ledger:
    balance: int | None
    deltas: int
    """The sum of every ledger entry's change of balance: equals ``balance`` when the ledger adds up."""
    charges: int
    charged_reservations: int
    charged_amount: int
    reservations: dict[str, int]
    paid_usage_rows: int
