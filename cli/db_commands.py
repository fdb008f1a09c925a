"""Database commands: `taskrunner db upgrade` (the migrations; compose runs it before the API
starts), `taskrunner db current`, and `taskrunner db import-ledger` (cli/ledger_import.py).

The database is TASKRUNNER_DATABASE_URL's (SQLite in the data dir when unset); see db/.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from cli.main import EXIT_OK, CliError, Subcommands

if TYPE_CHECKING:
    from db.engine import Database


def register(subcommands: Subcommands) -> None:
    db = subcommands.add_parser(
        "db",
        help="the API's database: migrations",
        description="The API's database (TASKRUNNER_DATABASE_URL; SQLite in the data dir if "
        "unset): idempotency keys and webhook registrations.",
    )
    commands = db.add_subparsers(title="commands", metavar="COMMAND", dest="db_command")
    commands.required = True
    upgrade = commands.add_parser(
        "upgrade",
        help="bring the schema up to date (run before the API starts)",
        description="Apply the migrations the database lacks, in one transaction. Safe to run "
        "again: an up-to-date database is left as it is.",
    )
    upgrade.add_argument("--revision", default="head", help="target revision (default: head)")
    upgrade.set_defaults(handler=upgrade_command)
    current = commands.add_parser(
        "current", help="print the schema revision of the database and of this code"
    )
    current.set_defaults(handler=current_command)
    from cli import ledger_import

    ledger_import.register(commands)


def upgrade_command(args: argparse.Namespace) -> int:
    from db.engine import redacted

    async def go() -> tuple[str, str | None, str | None]:
        from db.migrate import upgrade

        async with _database() as database:
            before, after = await upgrade(database, args.revision)
            return redacted(database.url), before, after

    where, before, after = asyncio.run(go())
    if before == after:
        print(f"{where}: schema at revision {after}, up to date")
    else:
        print(f"{where}: schema upgraded from revision {before or 'none'} to {after}")
    return EXIT_OK


def current_command(args: argparse.Namespace) -> int:
    async def go() -> str | None:
        from db.migrate import current

        async with _database() as database:
            return await current(database)

    from db.migrate import head

    at = asyncio.run(go())
    print(f"database: {at or 'none (never migrated)'}\ncode:     {head()}")
    return EXIT_OK


@asynccontextmanager
async def _database() -> AsyncIterator[Database]:
    """The configured database for one command; failing to reach it is a one-line error."""
    from sqlalchemy.exc import DBAPIError

    from api.settings import get_api_settings
    from db.engine import Database, DatabaseConfigError, database_url, redacted

    try:
        database = Database(database_url(get_api_settings()))
    except DatabaseConfigError as exc:
        raise CliError(str(exc)) from None
    try:
        yield database
    except (OSError, DBAPIError) as exc:
        raise CliError(
            f"cannot use the database {redacted(database.url)}: {str(exc).splitlines()[0][:300]}"
        ) from None
    finally:
        await database.dispose()
