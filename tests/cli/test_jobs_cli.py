"""``limner jobs cancel`` and ``limner tokens revoke`` on a temporary data dir: queued jobs end with the
reason, running ones are flagged for their server, and mistakes are one-line errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from limner.accounts import tokens
from limner.accounts.models import JobRecord
from limner.accounts.service import Accounts
from limner.cli import app
from limner.service import job_store
from limner.settings import Settings
from tests.support.queued_jobs import queue_job


@pytest.fixture
def accounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Accounts]:
    """The database the commands open (through ``LIMNER_DATA_DIR``), for the test to fill and read."""
    monkeypatch.setenv("LIMNER_CONFIG", "/nonexistent/limner.toml")
    monkeypatch.setenv("LIMNER_DATA_DIR", str(tmp_path / "data"))
    opened = Accounts.open(Settings(data_dir=tmp_path / "data"))
    yield opened
    opened.db.dispose()


def limner(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def state(accounts: Accounts, job_id: str) -> tuple[str, bool, str | None]:
    with accounts.db.read() as session:
        row = session.get(JobRecord, job_id)
        assert row is not None
        return row.status, row.cancel_requested, row.error_message


def test_cancel_a_consumers_jobs_and_one_by_id(accounts: Accounts) -> None:
    running = queue_job(accounts.db, "alice", None)
    job_store.claim(accounts.db, "instance-a", 1)
    queued, bobs = queue_job(accounts.db, "alice", None), queue_job(accounts.db, "bob", None)
    tokens.create_token(accounts.db, "alice")
    tokens.create_token(accounts.db, "bob")

    result = limner("jobs", "cancel", "--consumer", "alice")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"{running}  alice                 stopping",
        f"{queued}  alice                 cancelled",
        "cancelled 1 queued job(s); 1 running job(s) told to stop (refunded when they do)",
    ]
    assert state(accounts, queued) == ("cancelled", False, "Cancelled by an administrator before it started.")
    assert state(accounts, running) == ("running", True, "Cancelled by an administrator.")
    assert state(accounts, bobs)[0] == "queued", "another consumer's job is untouched"

    by_id = limner("jobs", "cancel", bobs)
    assert by_id.exit_code == 0 and by_id.stdout.splitlines()[-1].startswith("cancelled 1 queued job(s); 0 running")
    assert state(accounts, bobs)[0] == "cancelled"


def test_revoking_a_token_cancels_its_jobs(accounts: Accounts) -> None:
    revoked, kept = tokens.create_token(accounts.db, "alice"), tokens.create_token(accounts.db, "alice")
    mine, other = queue_job(accounts.db, "alice", revoked.id), queue_job(accounts.db, "alice", kept.id)

    result = limner("tokens", "revoke", str(revoked.id))

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"revoked token {revoked.id} ({revoked.prefix}) of alice",
        "cancelled 1 queued job(s); 0 running job(s) told to stop (refunded when they do)",
    ]
    assert state(accounts, mine) == (
        "cancelled",
        False,
        "Cancelled before it started: the token that submitted it was revoked.",
    )
    assert state(accounts, other)[0] == "queued"


def test_mistakes_are_one_line_errors(accounts: Accounts) -> None:
    nothing = limner("jobs", "cancel")
    assert (nothing.exit_code, nothing.stderr) == (1, "error: name job ids, or a consumer with --consumer\n")
    nobody = limner("jobs", "cancel", "--consumer", "nobody")
    assert (nobody.exit_code, nobody.stderr) == (1, "error: No consumer named 'nobody'.\n")
