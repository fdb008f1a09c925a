"""The API and its database: SQLite brought up to date on start, a PostgreSQL schema behind the
code refused at start, and a database out of reach answered with 503 and Retry-After (never a
500, never a run started without its webhooks)."""

from __future__ import annotations

import socket

import httpx
import pytest

from api.app import create_app
from cli.settings import DevSettings
from db.engine import Database
from db.migrate import SchemaOutOfDate, current, head
from tests.api.packs import ECHO
from tests.api.support import APPROVER, RUNS, bearer, error_code, serve
from tests.helpers import unique
from tests.postgres import PostgresServer


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_database_out_of_reach_is_503_with_retry_after(
    api_settings: DevSettings, stack: object
) -> None:
    away = api_settings.model_copy(
        update={"database_url": f"postgresql+asyncpg://tr@127.0.0.1:{closed_port()}/tr"}
    )
    with serve(create_app(away)) as url:  # it starts, and says why it is not ready
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            ready = await http.get("/readyz")
            keyed = await http.post(
                RUNS,
                json={"manifest": ECHO, "inputs": {"who": "x"}},
                headers={"Idempotency-Key": unique("key"), **APPROVER},
            )
            plain = await http.post(
                RUNS, json={"manifest": ECHO, "inputs": {"who": "x"}}, headers=APPROVER
            )
            hooks = await http.get("/v1/task-runner/webhooks", headers=bearer("taskrunner.admin"))
    for response in (ready, keyed, plain, hooks):
        assert response.status_code == 503, response.text
        assert error_code(response) == "database_unavailable"
        assert int(response.headers["retry-after"]) > 0
    # /readyz needs no token: it names no database host, port or user.
    assert "127.0.0.1" not in ready.text and "tr@" not in ready.text, ready.text


async def test_the_api_refuses_a_postgresql_schema_behind_its_code(
    api_settings: DevSettings, postgres: PostgresServer
) -> None:
    behind = api_settings.model_copy(update={"database_url": postgres.create_database("stale")})
    app = create_app(behind)
    # What uvicorn runs at start-up: it fails there, before serving anything.
    with pytest.raises(SchemaOutOfDate, match="run `taskrunner db upgrade` first"):
        async with app.router.lifespan_context(app):
            pass


async def test_sqlite_is_brought_up_to_date_when_the_api_starts(
    api_settings: DevSettings, tmp_path: object
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/fresh.db"
    fresh = api_settings.model_copy(update={"database_url": url})
    with serve(create_app(fresh)) as api:
        async with httpx.AsyncClient(base_url=api, timeout=30) as http:
            listed = await http.get("/v1/task-runner/webhooks", headers=bearer("taskrunner.admin"))
            assert listed.status_code == 200, listed.text
    database = Database(url)
    try:
        assert await current(database) == head()
    finally:
        await database.dispose()
