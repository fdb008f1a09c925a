"""The real stack for the API tests: the dev server, a worker, and the API served by uvicorn over
real HTTP on 127.0.0.1, driven with httpx as any REST caller would.

One API server and one worker serve the whole session (on a task queue of their own); every
test uses its own run ids, so tests do not see each other's runs. The API's database is SQLite,
or PostgreSQL with TASKRUNNER_TEST_DATABASE=postgresql; tests that take `any_http` run against
an API on each of the two (a second API server, on the same worker and task queue).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from cli.catalog import installed_executors
from cli.settings import DevSettings
from tests.api.support import PACK_SIGNER, SECRET, SERVICE_KEY, SIGNING_KEY, serve
from tests.helpers import unique, worker_for
from tests.postgres import DATABASES, PostgresServer


@dataclass(frozen=True)
class Stack:
    url: str
    settings: DevSettings


def default_database() -> str:
    kind = os.environ.get("TASKRUNNER_TEST_DATABASE", "sqlite")
    if kind not in DATABASES:
        raise RuntimeError(f"TASKRUNNER_TEST_DATABASE={kind!r}: use one of {DATABASES}")
    return kind


def database_url_for(kind: str, data_dir: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{data_dir / 'taskrunner.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database("api")


async def migrated(url: str) -> None:
    """What `taskrunner db upgrade` does before the API starts (SQLite migrates on start)."""
    from db.engine import Database
    from db.migrate import upgrade

    database = Database(url)
    try:
        await upgrade(database)
    finally:
        await database.dispose()


def trusted_pack_keys(folder: Path) -> Path:
    path = folder / "trusted-pack-keys.pem"
    path.write_text(PACK_SIGNER.public_pem)
    return path


@pytest.fixture(scope="session")
def api_settings(
    dev_env: WorkflowEnvironment,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> DevSettings:
    data_dir = tmp_path_factory.mktemp("api-data")
    return DevSettings(
        temporal_address=dev_env.client.service_client.config.target_host,
        temporal_namespace=dev_env.client.namespace,
        task_queue=unique("api-tq"),
        data_dir=data_dir,
        database_url=database_url_for(default_database(), data_dir, request),
        auth_enabled=True,
        jwt_hs256_secret=SECRET,
        signing_key=SIGNING_KEY,
        webhook_allow_private_targets=True,  # the tests' receivers are on loopback
        service_key=SERVICE_KEY,
        pack_trusted_keys_file=trusted_pack_keys(tmp_path_factory.mktemp("keys")),
        logs_poll_seconds=0.1,
        query_timeout_seconds=10,
    )


StackOn = Callable[[str], Awaitable[Stack]]


@pytest.fixture(scope="session")
async def stacks(
    dev_env: WorkflowEnvironment, api_settings: DevSettings, request: pytest.FixtureRequest
) -> AsyncIterator[StackOn]:
    """The API on a database of a kind ("sqlite", "postgresql"), started when first asked for."""
    async with worker_for(
        dev_env.client,
        Path(api_settings.data_dir),
        api_settings.task_queue,
        settings=api_settings,
    ):
        with contextlib.ExitStack() as servers:
            made: dict[str, Stack] = {}

            async def on(kind: str) -> Stack:
                if kind not in made:
                    settings = api_settings
                    if kind != default_database():
                        url = database_url_for(kind, Path(api_settings.data_dir), request)
                        settings = api_settings.model_copy(update={"database_url": url})
                    assert settings.database_url is not None
                    if kind != "sqlite":
                        await migrated(settings.database_url)
                    app = create_app(settings, executors=installed_executors())
                    made[kind] = Stack(servers.enter_context(serve(app)), settings)
                return made[kind]

            yield on


@pytest.fixture(scope="session")
async def stack(stacks: StackOn) -> Stack:
    return await stacks(default_database())


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        yield client


@pytest.fixture(params=DATABASES)
async def any_stack(request: pytest.FixtureRequest, stacks: StackOn) -> Stack:
    """The API on each database: the test runs once on SQLite, once on PostgreSQL."""
    return await stacks(request.param)


@pytest.fixture
async def any_http(any_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=any_stack.url, timeout=30) as client:
        yield client


# The executors the contract's example packs use: an operator who installs them (a package of
# `taskrunner.executors` entry points) gets an API that takes those packs.
CONTRACT_EXECUTORS = ("builtin:scanner", "builtin:build", "builtin:deploy")


@pytest.fixture(scope="session")
async def contract_stack(stack: Stack) -> AsyncIterator[Stack]:
    """A second API on the same worker whose catalog also names the contract's executors (the
    worker itself does not have them, so their steps fail when they run)."""
    catalog = {**installed_executors(), **dict.fromkeys(CONTRACT_EXECUTORS)}
    with serve(create_app(stack.settings, executors=catalog)) as url:
        yield Stack(url, stack.settings)


@pytest.fixture
async def contract_http(contract_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=contract_stack.url, timeout=30) as client:
        yield client
