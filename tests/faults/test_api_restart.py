"""The API killed mid-run (and mid-stream) and started again on the same port: nothing is lost,
a follower resumes its log stream with `after` where the dead stream stopped, and the CLI's
`runs show --watch` rides the outage out and ends with the run."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from temporalio.testing import WorkflowEnvironment

from tests.api.packs import GATED
from tests.faults.support import API, assert_gap_free, free_port, group, wait_http, worker_env
from tests.helpers import unique, worker_for

RUNS = "/v1/task-runner/runs"


async def follow_until(
    http: httpx.AsyncClient, run_id: str, after: int, event: str
) -> list[dict[str, Any]]:
    """Entries of a followed log stream from `after` until one of type `event` arrives."""
    entries: list[dict[str, Any]] = []
    params: dict[str, Any] = {"follow": "true", "after": after}
    async with http.stream("GET", f"{RUNS}/{run_id}/logs", params=params) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.strip():
                entries.append(json.loads(line))
                if entries[-1]["eventType"] == event:
                    return entries
    raise AssertionError(f"the stream ended before {event}: {entries}")


class TestApiRestart:
    async def test_runs_survive_and_logs_resume_with_after(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        tq = unique("tq")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = worker_env(
            dev_env.client.service_client.config.target_host,
            tq,
            tmp_path,
            TASKRUNNER_AUTH_ENABLED="false",
            TASKRUNNER_API_PORT=str(port),
            TASKRUNNER_LOGS_POLL_SECONDS="0.1",
        )
        async with (
            worker_for(dev_env.client, tmp_path, tq),
            httpx.AsyncClient(base_url=url, timeout=30) as http,
        ):
            with group(API, env, tmp_path / "api.log") as api:
                await wait_http(f"{url}/readyz")
                created = (await http.post(RUNS, json={"manifest": GATED})).json()
                run_id = created["runId"]
                watcher = subprocess.Popen(
                    [sys.executable, "-m", "cli.main", "runs", "show", "--watch", run_id],
                    env={**env, "TASKRUNNER_URL": url},
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                # A follower reads up to the gate; the stream is still open when the API dies.
                async with http.stream(
                    "GET", f"{RUNS}/{run_id}/logs", params={"follow": "true"}
                ) as response:
                    before: list[dict[str, Any]] = []
                    lines = response.aiter_lines()
                    async for line in lines:
                        before.append(json.loads(line))
                        if before[-1]["eventType"] == "gate.awaiting":
                            break
                    api.kill()
                    try:
                        rest = [line async for line in lines if line.strip()]
                    except httpx.TransportError:
                        rest = []
                assert rest == [], rest  # nothing more came from the dead API
                await asyncio.sleep(2)  # the watcher meets the dead API at least once
                assert watcher.poll() is None, watcher.communicate()

                # While the API is down the run still waits at its gate; then the API returns.
                api.start()
                await wait_http(f"{url}/readyz")
                state = (await http.get(f"{RUNS}/{run_id}")).json()
                assert state["status"] == "awaiting-approval", state
                decision = await http.post(
                    f"{RUNS}/{run_id}/approvals/release-manager",
                    json={"decision": "approved", "planHash": created["planHash"]},
                )
                assert decision.status_code == 200, decision.text
                after = await follow_until(http, run_id, before[-1]["sequence"], "run.completed")
                final = (await http.get(f"{RUNS}/{run_id}")).json()
                whole = (await http.get(f"{RUNS}/{run_id}/logs")).text
                out, err = await asyncio.to_thread(watcher.communicate, timeout=60)

        entries = before + after
        assert_gap_free(entries)
        assert entries == [json.loads(line) for line in whole.splitlines()]
        assert final["status"] == "succeeded"
        assert [s["status"] for s in final["steps"]] == ["Succeeded"] * 3
        # The watcher said it lost the API, kept trying, and exited 0 when the run succeeded.
        assert watcher.returncode == 0, (out, err)
        assert "cannot reach the API" in err and "trying again" in err, err
        assert f"run {run_id}: succeeded" in out.splitlines()[-1], out
