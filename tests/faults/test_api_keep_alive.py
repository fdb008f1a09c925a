"""The API keeps an idle connection open longer than clients do (api.app.KEEP_ALIVE_SECONDS), so
a client never sends a request on a connection the server is closing: that request would get no
answer (the keyed-create bench saw 1 or 2 ReadErrors in 2,000 with uvicorn's 5 s)."""

from __future__ import annotations

import asyncio
import http.client
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from tests.faults.support import API, free_port, group, wait_http, worker_env
from tests.helpers import unique


def ask(connection: http.client.HTTPConnection) -> int:
    """One request on the connection (http.client reuses it; it raises if the server closed it)."""
    connection.request("GET", "/healthz")
    response = connection.getresponse()
    response.read()
    return response.status


async def test_a_connection_idle_past_the_clients_own_expiry_still_answers(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    port = free_port()
    env = worker_env(
        dev_env.client.service_client.config.target_host,
        unique("tq"),
        tmp_path,
        TASKRUNNER_AUTH_ENABLED="false",
        TASKRUNNER_API_PORT=str(port),
    )
    with group(API, env, tmp_path / "api.log"):
        await wait_http(f"http://127.0.0.1:{port}/healthz")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            assert ask(connection) == 200
            first = connection.sock
            # Longer than httpx keeps an idle connection (5 s), and than uvicorn's default.
            await asyncio.sleep(6.5)
            assert ask(connection) == 200
            assert connection.sock is first  # the same connection, still open
        finally:
            connection.close()
