"""Alembic's environment: migrations run on the connection `db.migrate` hands over, or, from the
`alembic` command line, on the database TASKRUNNER_DATABASE_URL names (SQLite in var/ if unset).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from alembic import context
from sqlalchemy.engine import Connection

from db.engine import Database, database_url
from db.models import Base

target_metadata = Base.metadata


class FromEnvironment:
    """The API's two settings that name the database, read as `api.settings` reads them."""

    def __init__(self) -> None:
        self.database_url = os.environ.get("TASKRUNNER_DATABASE_URL") or None
        self.data_dir = Path(os.environ.get("TASKRUNNER_DATA_DIR", "var"))


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_from_command_line() -> None:
    database = Database(database_url(FromEnvironment()))
    try:
        async with database.engine.begin() as connection:
            await connection.run_sync(run_migrations)
    finally:
        await database.dispose()


given = context.config.attributes.get("connection")
if given is not None:
    run_migrations(given)
elif context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run them on a database")
else:
    asyncio.run(run_from_command_line())
