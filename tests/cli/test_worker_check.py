"""`taskrunner worker --check`, the worker container's healthcheck (docker-compose.yml): healthy
while a worker of this host polls the task queue, on a real dev server, without the temporal CLI
(the image does not ship it)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sysconfig
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from cli.service_commands import worker_polls
from tests.helpers import unique, worker_for
from workflows.settings import WorkerSettings

TASKRUNNER = str(Path(sysconfig.get_path("scripts")) / "taskrunner")


def check(address: str, task_queue: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKRUNNER_", "TEMPORAL_"))}
    env |= {"TEMPORAL_ADDRESS": address, "TASKRUNNER_TASK_QUEUE": task_queue}
    return subprocess.run(
        [TASKRUNNER, "worker", "--check"], capture_output=True, text=True, env=env, timeout=120
    )


async def test_healthy_only_while_a_worker_of_this_host_polls(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    address = dev_env.client.service_client.config.target_host
    queue, idle = unique("tq"), unique("idle")
    settings = WorkerSettings(temporal_address=address, task_queue=queue)
    async with worker_for(dev_env.client, tmp_path, task_queue=queue):
        for _ in range(100):  # Temporal lists a poller once its first poll arrived
            if await worker_polls(settings):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"no poller on {queue}")
        healthy = await asyncio.to_thread(check, address, queue)
        assert healthy.returncode == 0, healthy.stderr
        # A queue nobody polls is unhealthy, and says so.
        unhealthy = await asyncio.to_thread(check, address, idle)
        assert unhealthy.returncode == 1
        assert f"polls task queue {idle}" in unhealthy.stderr
    assert not await worker_polls(settings.model_copy(update={"task_queue": idle}))


def test_unreachable_temporal_is_unhealthy() -> None:
    result = check("127.0.0.1:1", "taskrunner")
    assert result.returncode == 1
    assert "taskrunner worker --check:" in result.stderr
