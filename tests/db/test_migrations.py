"""The schema: migrations bring an empty database to the models' schema, on SQLite and on a real
PostgreSQL, and the API refuses a database whose schema is behind the code."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from api.settings import ApiSettings
from db.engine import Database, DatabaseConfigError, database_url, normalized, redacted
from db.migrate import SchemaOutOfDate, check, current, head, upgrade
from db.models import Base


async def test_migrations_build_the_models_schema(database_url: str) -> None:
    db = Database(database_url)
    try:
        assert await current(db) is None
        with pytest.raises(SchemaOutOfDate, match="taskrunner db upgrade"):
            await check(db)
        before, after = await upgrade(db)
        assert (before, after) == (None, head())
        await check(db)
        async with db.engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            # What autogenerate would write next: nothing, if models and migrations agree.
            diff = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata)
            )
        assert {"idempotency_keys", "webhooks", "alembic_version"} <= tables
        assert diff == []
        assert await upgrade(db) == (head(), head())  # a second run changes nothing
    finally:
        await db.dispose()


def test_the_url_setting_chooses_the_database(tmp_path: object) -> None:
    default = database_url(ApiSettings(data_dir="/srv/tr"))
    assert default == "sqlite+aiosqlite:////srv/tr/taskrunner.db"
    given = database_url(ApiSettings(database_url="postgresql://tr:pw@db/taskrunner"))
    assert normalized(given).drivername == "postgresql+asyncpg"
    assert "pw" not in redacted(given)
    with pytest.raises(DatabaseConfigError, match="unsupported database 'mysql'"):
        normalized("mysql://db/x")
    with pytest.raises(DatabaseConfigError, match="unsupported driver"):
        normalized("postgresql+psycopg2://db/x")


def test_taskrunner_db_upgrade(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from api.settings import get_api_settings
    from cli.main import main

    monkeypatch.setenv("TASKRUNNER_DATABASE_URL", database_url)
    get_api_settings.cache_clear()
    try:
        assert main(["db", "current"]) == 0
        assert "database: none" in capsys.readouterr().out
        assert main(["db", "upgrade"]) == 0
        assert f"upgraded from revision none to {head()}" in capsys.readouterr().out
        assert main(["db", "upgrade"]) == 0
        assert "up to date" in capsys.readouterr().out
        monkeypatch.setenv("TASKRUNNER_DATABASE_URL", "postgresql://u:secret@127.0.0.1:1/x")
        get_api_settings.cache_clear()
        assert main(["db", "upgrade"]) == 1
        error = capsys.readouterr().err
        assert "cannot use the database" in error and "secret" not in error
    finally:
        get_api_settings.cache_clear()
