"""Alembic, driven from code: `upgrade` (what `taskrunner db upgrade` and the embedded API's
start-up run), `current` and `head` (what the API checks before it serves).

Migrations live in db/migrations/versions; the `alembic` command line works too, through
alembic.ini at the repository root (see `db` for how to add one).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from db.engine import Database, redacted

MIGRATIONS = Path(__file__).parent / "migrations"


class SchemaOutOfDate(RuntimeError):
    """The database's schema is not the one this code was written for."""


def config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision this code knows."""
    revision = ScriptDirectory.from_config(config()).get_current_head()
    assert revision is not None, "db/migrations/versions has no revision"
    return revision


async def current(database: Database) -> str | None:
    """The revision the database is at (None: never migrated)."""
    async with database.engine.connect() as connection:
        return await connection.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )


async def upgrade(database: Database, revision: str = "head") -> tuple[str | None, str | None]:
    """Bring the schema to `revision`, in one transaction; (revision before, revision after)."""
    before = await current(database)
    async with database.engine.begin() as connection:
        await connection.run_sync(lambda sync: command.upgrade(config(sync), revision))
    return before, await current(database)


async def check(database: Database) -> None:
    """Raise SchemaOutOfDate unless the database is at this code's head revision."""
    at, want = await current(database), head()
    if at != want:
        raise SchemaOutOfDate(
            f"the database {redacted(database.url)} is at schema revision {at or 'none'}, "
            f"this TaskRunner needs {want}: run `taskrunner db upgrade` first"
        )
