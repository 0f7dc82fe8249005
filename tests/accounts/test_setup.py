"""Settings that refuse unsafe combinations, migrations that match the models on both databases, and
the ``limner tokens|credits|consumers|usage`` commands."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pydantic import ValidationError
from sqlalchemy import text
from typer.testing import CliRunner

from limner.accounts.db import VERSION_TABLE, Database, normalize_url
from limner.accounts.models import Base
from limner.accounts.service import Accounts
from limner.cli import app as cli
from limner.settings import Settings


def test_a_public_bind_refuses_short_admin_and_metrics_tokens(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="admin_token must be at least 24 characters"):
        Settings(data_dir=tmp_path, host="0.0.0.0", admin_token="hunter2")
    with pytest.raises(ValidationError, match="metrics_token"):
        Settings(data_dir=tmp_path, host="203.0.113.7", metrics_token="short")
    assert Settings(data_dir=tmp_path, host="0.0.0.0", admin_token="a" * 32).secret("admin_token") == "a" * 32
    assert Settings(data_dir=tmp_path, admin_token="short").secret("admin_token") == "short", "fine on loopback"
    with pytest.raises(ValidationError, match="reservation_ttl_seconds must exceed request_timeout"):
        Settings(data_dir=tmp_path, request_timeout=600, reservation_ttl_seconds=300)
    assert "a" * 32 not in repr(Settings(data_dir=tmp_path, admin_token="a" * 32)), "secrets stay out of reprs"


def test_migrations_build_exactly_the_models(database_url: str) -> None:
    db = Database(database_url)
    try:
        db.migrate()
        db.migrate()  # idempotent: every app start runs it
        with db.engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "version_table": VERSION_TABLE}
            )
            assert compare_metadata(context, Base.metadata) == []
        if db.dialect == "sqlite":
            with db.engine.connect() as connection:
                assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
                assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    finally:
        db.dispose()


def test_database_urls() -> None:
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("sqlite:////x.db") == "sqlite:////x.db"


def test_cli_tokens_credits_consumers_and_usage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIMNER_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()

    def limner(*args: str, code: int = 0) -> str:
        result = runner.invoke(cli, list(args))
        assert result.exit_code == code, result.output
        return result.output

    created = limner("tokens", "create", "--consumer", "web", "--expires", "30d", "--rpm", "60", "--label", "site")
    secret = created.strip().splitlines()[-1]
    assert secret.startswith("lim_") and "shown only this once" in created
    listed = limner("tokens", "list")
    assert secret[:12] in listed and secret not in listed and "site" in listed
    rotated = limner("tokens", "rotate", "1")
    assert "still works" in rotated
    limner("tokens", "revoke", secret[:12])
    assert secret[:12] not in limner("tokens", "list") and secret[:12] in limner("tokens", "list", "--all")
    assert "No token" in limner("tokens", "revoke", "lim_nothing-like-it", code=1)

    assert "balance 5" in limner("credits", "grant", "web", "5")
    assert "balance 3.5" in limner("credits", "grant", "web", "--", "-1.5")
    shown = limner("credits", "show", "web")
    assert "balance 3.5" in shown and "grant" in shown
    assert "No consumer named 'nobody'" in limner("credits", "grant", "nobody", "1", code=1)
    assert "unlimited" in limner("credits", "unlimited", "web")

    limner("consumers", "create", "batch", "--ipm", "10")
    assert "ipm 20" in limner("consumers", "limits", "batch", "--ipm", "20")
    consumers = limner("consumers", "list")
    assert "batch" in consumers and "web" in consumers
    assert "requests" in limner("usage", "--consumer", "web", "--since", "1d", "-n", "5")

    accounts = Accounts.open(Settings(data_dir=tmp_path / "data"))
    try:
        from limner.accounts import tokens

        assert tokens.verify_token(accounts.db, secret) is None
        assert len([t for t in tokens.list_tokens(accounts.db) if t.status() == "active"]) == 1
    finally:
        accounts.db.dispose()


def test_the_data_directory_and_database_are_private(tmp_path: Path) -> None:
    """The database holds prompts, results, request bodies and webhook URLs: 0600 in a 0700 directory,
    like the signing key; a directory and database an older version left 0755 / 0644 are tightened."""
    previous = os.umask(0o022)
    try:
        data_dir = tmp_path / "data"
        data_dir.mkdir(mode=0o755)
        old = tmp_path / "old.db"
        old.write_bytes(b"")
        old.chmod(0o644)
        for name in ("old.db-wal", "old.db-shm"):
            (tmp_path / name).write_bytes(b"")
            (tmp_path / name).chmod(0o644)
        older = Database(f"sqlite:///{old}")  # tightened before SQLite opens them (it deletes the -wal on close)
        try:
            assert [_mode(tmp_path / name) for name in ("old.db", "old.db-wal", "old.db-shm")] == [0o600] * 3
        finally:
            older.dispose()

        accounts = Accounts.open(Settings(data_dir=data_dir))
        try:
            with accounts.db.write() as session:
                session.execute(text("UPDATE accounts_version SET version = version + 1"))
                files = sorted(path.name for path in data_dir.iterdir())
                assert {"limner.db", "limner.db-wal", "limner.db-shm"} <= set(files), files
                modes = {name: _mode(data_dir / name) for name in files}
        finally:
            accounts.db.dispose()
        assert _mode(data_dir) == 0o700
        assert modes == dict.fromkeys(files, 0o600), modes
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)
