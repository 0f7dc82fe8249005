"""The accounts database: one engine per app, migrated to head by Alembic when opened.

SQLite (the default, ``data_dir/limner.db``, mode 0600 like its ``-wal``/``-shm``/``-journal`` files: it holds
prompts, results and webhook URLs) runs in WAL mode with a busy timeout so concurrent
requests wait for each other instead of failing, and every write transaction starts with
``BEGIN IMMEDIATE``: it takes the write lock up front, so a transaction never has to upgrade a read
lock mid-way (which SQLite refuses with "database is locked" rather than wait).
PostgreSQL (``postgresql://...``, several replicas) needs nothing special: the ledger's conditional
``UPDATE ... WHERE balance >= cost`` is atomic under its default READ COMMITTED isolation.

The HTTP server calls the database from a small dedicated thread pool (``Database.call``), so slow
queries never block the event loop and a busy engine thread pool never starves the ledger.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.orm import Session, sessionmaker

from limner.accounts.tracing import trace_statements
from limner.core.files import make_private
from limner.core.tracing import inner_span

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_SIBLINGS = ("-wal", "-shm", "-journal")
VERSION_TABLE = "limner_alembic_version"
MIGRATION_LOCK = 0x6C696D6E  # "limn": serialises migrations of replicas starting together on PostgreSQL
SQLITE_BUSY_MS = 30_000
DB_THREADS = 8

P = ParamSpec("P")
T = TypeVar("T")


def normalize_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` use psycopg 3 (the driver limner installs)."""
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url.removeprefix(scheme)
    return url


def default_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'limner.db').resolve()}"


def _keep_sqlite_private(url: str) -> None:
    """Create the database file 0600 before SQLite opens it (SQLite gives its -wal, -shm and -journal files
    the database's own mode), and tighten the files an older version left 0644."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    make_private(path, create="file")
    for suffix in SQLITE_SIBLINGS:
        make_private(path.with_name(path.name + suffix))


def _sqlite_engine(url: str) -> Engine:
    _keep_sqlite_private(url)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_MS / 1000},
        pool_size=DB_THREADS,
        max_overflow=4,
    )

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" hook below emits BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection: Any) -> None:
        write = connection.get_execution_options().get("limner_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


class Database:
    """An engine, a reader and a writer session factory, and the thread pool the server uses."""

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        if self.url.startswith("sqlite"):
            self.engine = _sqlite_engine(self.url)
        else:
            self.engine = create_engine(self.url, pool_pre_ping=True, pool_size=DB_THREADS, max_overflow=4)
        trace_statements(self.engine)
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = sessionmaker(self.engine.execution_options(limner_write=True), expire_on_commit=False)
        self._executor: ThreadPoolExecutor | None = None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads (committed on exit, so it never holds a snapshot open)."""
        with self._reader.begin() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction: committed on success, rolled back on any error."""
        with self._writer.begin() as session:
            yield session

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking database function on the accounts thread pool, in the caller's context (so its
        statements' spans join the request's trace, under one span named after the function)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(DB_THREADS, thread_name_prefix="limner-db")
        loop = asyncio.get_running_loop()
        with inner_span("limner.db", {"code.function.name": getattr(fn, "__qualname__", repr(fn))}):
            work = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
            return await loop.run_in_executor(self._executor, work)

    def migrate(self) -> None:
        """Upgrade the schema to the newest revision (idempotent; safe with replicas starting together)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.execution_options(limner_write=True).begin() as connection:
            if self.dialect == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def dispose(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self.engine.dispose()
