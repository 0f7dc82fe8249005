"""Cancelling async jobs in the database (``limner.service.job_cancel``, ``job_store.stop``): a revoked token's
job is never claimed, even one queued after the revocation swept its token's jobs; cancellations name their
reason; a flagged job whose server died ends with that reason; and an operator must say which jobs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from limner.accounts import tokens
from limner.accounts.db import Database
from limner.accounts.models import JobRecord
from limner.accounts.service import Accounts
from limner.core.errors import InvalidRequest
from limner.service import job_cancel, job_recovery, job_store
from limner.service.job_store import JobView
from limner.settings import Settings
from tests.support.queued_jobs import queue_job


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    accounts = Accounts.open(Settings(data_dir=tmp_path / "data"))
    yield accounts.db
    accounts.db.dispose()


def row(db: Database, job_id: str) -> JobRecord:
    with db.read() as session:
        found = session.get(JobRecord, job_id)
        assert found is not None
        return found


def test_a_revoked_tokens_job_is_cancelled_not_claimed(db: Database) -> None:
    revoked, kept = tokens.create_token(db, "alice"), tokens.create_token(db, "alice")
    first = queue_job(db, "alice", revoked.id)
    tokens.revoke_token(db, str(revoked.id))  # as a replica that had not yet noticed, queueing after the sweep
    second = queue_job(db, "alice", kept.id)
    ended: list[JobView] = []

    taken = job_store.claim(db, "instance-a", 4, on_finished=lambda _session, view: ended.append(view))

    assert [view.id for view in taken] == [second]
    assert [(view.id, view.status) for view in ended] == [(first, "cancelled")], "its webhook event is queued"
    cancelled = row(db, first)
    assert (cancelled.status, cancelled.error_code, cancelled.error_message, cancelled.attempts) == (
        "cancelled",
        "cancelled",
        "Cancelled before it started: the token that submitted it was revoked.",
        0,
    )
    assert cancelled.body is None, "the request is not kept once the job ended"


def test_revoking_cancels_only_that_tokens_unfinished_jobs(db: Database) -> None:
    revoked, kept = tokens.create_token(db, "alice"), tokens.create_token(db, "alice")
    running, queued = queue_job(db, "alice", revoked.id), queue_job(db, "alice", revoked.id)
    other = queue_job(db, "alice", kept.id)
    assert [view.id for view in job_store.claim(db, "instance-a", 1)] == [running]

    info, views = job_cancel.revoke_token(db, revoked.prefix)

    assert info.status() == "revoked"
    assert [(view.id, view.status, view.cancel_requested) for view in views] == [
        (running, "running", True),
        (queued, "cancelled", False),
    ]
    assert row(db, other).status == "queued"
    assert job_store.report(db, "instance-a", {running: job_store.Progress(None, 0, None)}) == {running}
    again = job_cancel.revoke_token(db, revoked.prefix)[1]
    assert [(view.id, view.status) for view in again] == [(running, "running")], "idempotent: still stopping"


def test_a_flagged_job_whose_server_died_ends_with_its_reason(db: Database) -> None:
    job_id = queue_job(db, "alice", None)
    job_store.claim(db, "instance-gone", 1)
    job_cancel.cancel_jobs(db, consumer="alice")

    recovered = job_recovery.recover(db, ["instance-gone"], max_attempts=3)

    assert recovered.failed == [job_id]
    ended = row(db, job_id)
    assert (ended.status, ended.error_message) == ("cancelled", "Cancelled by an administrator; its server stopped.")


def test_the_owners_cancel_keeps_its_words(db: Database) -> None:
    running = queue_job(db, "alice", None)
    job_store.claim(db, "instance-gone", 1)
    queued = queue_job(db, "alice", None)
    assert job_cancel.cancel(db, "bob", queued) is None, "another consumer's job is not found"
    first = job_cancel.cancel(db, "alice", queued)
    assert first is not None and (first.status, first.error_message) == (
        "cancelled",
        "Cancelled by its owner before it started.",
    )
    job_cancel.cancel(db, "alice", running)
    job_recovery.recover(db, ["instance-gone"], max_attempts=3)
    assert row(db, running).error_message == "Cancelled by its owner; its server stopped."


def test_an_operator_must_name_the_jobs(db: Database) -> None:
    with pytest.raises(InvalidRequest, match=r"^Name the jobs to cancel: a consumer, a token or job ids\.$"):
        job_cancel.cancel_jobs(db)
    with pytest.raises(InvalidRequest, match=r"^At most 100 job ids at once; cancel a consumer's jobs by its name\.$"):
        job_cancel.cancel_jobs(db, job_ids=[f"job_{n}" for n in range(101)])
    assert job_cancel.cancel_jobs(db, job_ids=["job_none"]) == []
