"""The real stack for the API tests: the dev server, a worker, and the API served by uvicorn over
real HTTP on 127.0.0.1, driven with httpx as any REST caller would.

One API server and one worker serve the whole session (on a task queue of their own); every
test uses its own run ids, so tests do not see each other's runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from cli.settings import DevSettings
from tests.api.support import SECRET, SERVICE_KEY, SIGNING_KEY, serve
from tests.helpers import unique, worker_for


@dataclass(frozen=True)
class Stack:
    url: str
    settings: DevSettings


@pytest.fixture(scope="session")
def api_settings(
    dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> DevSettings:
    return DevSettings(
        temporal_address=dev_env.client.service_client.config.target_host,
        temporal_namespace=dev_env.client.namespace,
        task_queue=unique("api-tq"),
        data_dir=tmp_path_factory.mktemp("api-data"),
        auth_enabled=True,
        jwt_hs256_secret=SECRET,
        signing_key=SIGNING_KEY,
        webhook_allow_private_targets=True,  # the tests' receivers are on loopback
        service_key=SERVICE_KEY,
        logs_poll_seconds=0.1,
        query_timeout_seconds=10,
    )


@pytest.fixture(scope="session")
async def stack(dev_env: WorkflowEnvironment, api_settings: DevSettings) -> AsyncIterator[Stack]:
    async with worker_for(
        dev_env.client,
        Path(api_settings.data_dir),
        api_settings.task_queue,
        settings=api_settings,
    ):
        with serve(create_app(api_settings)) as url:
            yield Stack(url, api_settings)


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        yield client
