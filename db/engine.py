"""The engine and sessions, from one URL setting.

`database_url(settings)` is `TASKRUNNER_DATABASE_URL`, or SQLite in the data dir when it is unset.
`Database` holds the one `AsyncEngine` of a process and hands out sessions.

SQLite, as `taskrunner dev` uses it, is tuned for many concurrent short transactions from one
process: WAL (readers never wait for the writer), a 30 s busy timeout, and every transaction
opened with `BEGIN IMMEDIATE`, so a transaction that reads and then writes takes the write lock
up front instead of failing with "database is locked" when two of them meet (SQLAlchemy's
documented recipe for taking over SQLite's BEGIN).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

SQLITE_FILE = "taskrunner.db"
SQLITE_BUSY_TIMEOUT_SECONDS = 30
DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


class DatabaseConfigError(ValueError):
    """The database URL cannot work (an unknown database or driver)."""


class DatabaseSettings(Protocol):
    """What the URL comes from (`api.settings.ApiSettings` has both)."""

    @property
    def database_url(self) -> str | None: ...
    @property
    def data_dir(self) -> Path: ...


def database_url(settings: DatabaseSettings) -> str:
    """The configured URL, or SQLite in the data dir (`var/taskrunner.db` by default)."""
    if settings.database_url:
        return settings.database_url
    path = (Path(settings.data_dir) / SQLITE_FILE).resolve()
    return f"sqlite+aiosqlite:///{path}"


def normalized(url: str) -> URL:
    """`url` with an async driver: `postgresql://` means asyncpg, `sqlite://` aiosqlite."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseConfigError(f"not a database URL: {redacted(url)!r}") from None
    backend = parsed.get_backend_name()
    if backend not in DRIVERS:
        raise DatabaseConfigError(
            f"unsupported database {backend!r}: use sqlite+aiosqlite:// or postgresql+asyncpg://"
        )
    if "+" not in parsed.drivername:
        parsed = parsed.set(drivername=DRIVERS[backend])
    elif parsed.drivername not in DRIVERS.values():
        raise DatabaseConfigError(
            f"unsupported driver {parsed.drivername!r}: use {' or '.join(DRIVERS.values())}"
        )
    return parsed


def redacted(url: str | URL) -> str:
    """The URL for logs and errors: never its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"


class Database:
    """One process's engine. `session()` for ORM work, `engine` for Core and migrations."""

    def __init__(self, url: str, **engine_options: Any) -> None:
        self.url = normalized(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        options: dict[str, Any] = {"pool_pre_ping": not self.is_sqlite, **engine_options}
        if self.is_sqlite:
            database = self.url.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            options.setdefault("connect_args", {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
        else:
            # Overload waits for a connection this long, then is a 503 (see api.errors).
            options.setdefault("pool_size", 10)
            options.setdefault("max_overflow", 10)
            options.setdefault("pool_timeout", 10)
        self.engine: AsyncEngine = create_async_engine(self.url, **options)
        if self.is_sqlite:
            _tune_sqlite(self.engine)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in one transaction: committed when the block ends, rolled back on error."""
        async with self.sessions() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()

    def __repr__(self) -> str:
        return f"Database({redacted(self.url)!r})"


def _tune_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
