"""Followed logs tell the truth: across worker kills a followed stream (the API's, the CLI's
`logs --follow`, and its `runs show --watch`) stays open until the run has ended, retrying the
reads that fail while no worker answers; an API stopped with streams open stops within its grace
period, each stream ending with a last line that says so, and the followers resume with `after`
once it is back."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from temporalio.testing import WorkflowEnvironment

from api.app import SHUTDOWN_GRACE_SECONDS
from tests.api.packs import GATED
from tests.faults.support import (
    API,
    WORKER,
    assert_gap_free,
    free_port,
    group,
    wait_http,
    worker_env,
)
from tests.helpers import unique

RUNS = "/v1/task-runner/runs"
KILLS = 3

# About ten seconds of work in short steps, so the kills land between and inside steps.
NAPS = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: naps, version: 1.0.0}
spec:
  steps:
""" + "".join(
    f'    - {{id: nap{i}, run: {{uses: "builtin:sleep", with: {{seconds: 0.8}}}}}}\n'
    for i in range(12)
)


def api_env(address: str, tq: str, data_dir: Path, port: int) -> dict[str, str]:
    return worker_env(
        address,
        tq,
        data_dir,
        TASKRUNNER_AUTH_ENABLED="false",
        TASKRUNNER_API_PORT=str(port),
        TASKRUNNER_LOGS_POLL_SECONDS="0.1",
        # Reads fail fast while the worker is dead, so the stream does meet failed reads.
        TASKRUNNER_QUERY_TIMEOUT_SECONDS="1",
        # A killed worker's step is retried soon, not after the default 20 s.
        TASKRUNNER_HEARTBEAT_TIMEOUT_SECONDS="2",
    )


async def read_stream(
    http: httpx.AsyncClient, run_id: str, params: dict[str, Any]
) -> list[dict[str, Any]]:
    """Every line of a followed stream until it ends."""
    lines: list[dict[str, Any]] = []
    async with http.stream("GET", f"{RUNS}/{run_id}/logs", params=params) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.strip():
                lines.append(json.loads(line))
    return lines


class TestFollowAcrossWorkerKills:
    async def test_the_stream_ends_only_when_the_run_has_ended(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        tq, port = unique("tq"), free_port()
        url = f"http://127.0.0.1:{port}"
        env = api_env(dev_env.client.service_client.config.target_host, tq, tmp_path, port)
        with (
            group(WORKER, env, tmp_path / "worker.log") as worker,
            group(API, env, tmp_path / "api.log"),
        ):
            await wait_http(f"{url}/readyz")
            async with httpx.AsyncClient(base_url=url, timeout=120) as http:
                run_id = (await http.post(RUNS, json={"manifest": NAPS})).json()["runId"]
                follower = asyncio.create_task(read_stream(http, run_id, {"follow": "true"}))
                cli = subprocess.Popen(
                    [sys.executable, "-m", "cli.main", "runs", "logs", "--follow", run_id],
                    env={**env, "TASKRUNNER_URL": url},
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                watcher = subprocess.Popen(
                    [sys.executable, "-m", "cli.main", "runs", "show", "--watch", run_id],
                    env={**env, "TASKRUNNER_URL": url},
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(KILLS):
                    await asyncio.sleep(1.5)
                    worker.kill()
                    # Dead longer than the API's query timeout: reads fail meanwhile.
                    await asyncio.sleep(2.5)
                    assert not follower.done(), follower.result()
                    worker.start()
                lines = await asyncio.wait_for(follower, timeout=120)
                out, err = await asyncio.to_thread(cli.communicate, timeout=120)
                watched, watch_err = await asyncio.to_thread(watcher.communicate, timeout=120)

        assert [e for e in lines if "error" in e] == []
        assert lines[-1]["eventType"] == "run.completed", lines[-3:]
        assert_gap_free(lines)
        # The CLI's follower saw the same log, to the end, and said when it had to wait.
        assert cli.returncode == 0, err
        printed = [line for line in out.splitlines() if line.strip()]
        assert len(printed) == len(lines)
        assert "run.completed" in printed[-1]
        # `runs show --watch` also stayed with the run to its end and exited as it did.
        assert watcher.returncode == 0, watch_err
        assert f"run {run_id}: succeeded" in watched.splitlines()[-1], watched


class TestApiShutdownWithStreamsOpen:
    async def test_the_api_stops_in_its_grace_period_and_followers_resume(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        tq, port = unique("tq"), free_port()
        url = f"http://127.0.0.1:{port}"
        env = api_env(dev_env.client.service_client.config.target_host, tq, tmp_path, port)
        with (
            group(WORKER, env, tmp_path / "worker.log"),
            group(API, env, tmp_path / "api.log") as api,
        ):
            await wait_http(f"{url}/readyz")
            async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                created = (await http.post(RUNS, json={"manifest": GATED})).json()
                run_id = created["runId"]
                followers = [
                    asyncio.create_task(read_stream(http, run_id, {"follow": "true"}))
                    for _ in range(3)
                ]
                while True:  # all three have read up to the gate
                    state = (await http.get(f"{RUNS}/{run_id}")).json()
                    if state["status"] == "awaiting-approval":
                        break
                    await asyncio.sleep(0.1)
                await asyncio.sleep(0.5)
                assert not any(f.done() for f in followers)

                began = time.monotonic()
                await asyncio.to_thread(api.signal, signal.SIGTERM, 30)
                stopped_in = time.monotonic() - began
                streams = await asyncio.wait_for(asyncio.gather(*followers), timeout=10)

                assert stopped_in < SHUTDOWN_GRACE_SECONDS, stopped_in
                for lines in streams:
                    final = lines[-1]["error"]
                    assert final["code"] == "shutting_down"
                    entries = lines[:-1]
                    assert entries[-1]["eventType"] == "gate.awaiting"
                    assert final["resumeAfter"] == entries[-1]["sequence"]

                # Back again: a follower resumes after the last entry it had, to the run's end.
                api.start()
                await wait_http(f"{url}/readyz")
                before = streams[0][:-1]
                resumed = asyncio.create_task(
                    read_stream(
                        http,
                        run_id,
                        {"follow": "true", "after": streams[0][-1]["error"]["resumeAfter"]},
                    )
                )
                decided = await http.post(
                    f"{RUNS}/{run_id}/approvals/release-manager",
                    json={"decision": "approved", "planHash": created["planHash"]},
                )
                assert decided.status_code == 200, decided.text
                rest = await asyncio.wait_for(resumed, timeout=60)
        assert rest[-1]["eventType"] == "run.completed", rest[-3:]
        assert_gap_free(before + rest)
