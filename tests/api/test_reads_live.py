"""Reads of a run against a real worker that goes away: a live run's last known state answers
(marked stale, with its age) instead of a 503; a finished run is answered with no worker at all;
an unchanged state answers `If-None-Match` with 304."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from temporalio.client import WorkflowExecutionDescription, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from cli.settings import DevSettings as Settings
from tests.api.packs import ECHO, FAILING, GATED
from tests.api.support import (
    APPROVER,
    READER,
    SECRET,
    SIGNING_KEY,
    create_run,
    run_url,
    serve,
    status_is,
    wait_for_run,
)
from tests.helpers import unique, worker_for
from workflows.contract.names import MEMO_FINAL_STATE, workflow_id
from workflows.contract.state import RunStateSnapshot

# A gate, then many steps that never run: cancelled at the gate, its final state is larger than
# the memo holds, so the memo keeps only its first steps.
MANY_STEPS = 600
BIG = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: api-big, version: 1.0.0}
spec:
  approvals: [{id: go}]
  steps:
    - {id: wait, gate: {approval: {id: go}}}
""" + "\n".join(
    f'    - {{id: a-step-with-a-fairly-long-name-{i:04d}, run: {{uses: "builtin:noop"}}}}'
    for i in range(MANY_STEPS)
)


def settings_for(dev_env: WorkflowEnvironment, data_dir: Path) -> Settings:
    return Settings(
        temporal_address=dev_env.client.service_client.config.target_host,
        temporal_namespace=dev_env.client.namespace,
        task_queue=unique("reads-tq"),
        data_dir=data_dir,
        auth_enabled=True,
        jwt_hs256_secret=SECRET,
        signing_key=SIGNING_KEY,
        query_timeout_seconds=10,
        read_patience_seconds=0.5,
    )


@asynccontextmanager
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An API of its own (so nothing it knows comes from another test)."""
    with serve(create_app(settings)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            yield http


async def closed_canceled(
    dev_env: WorkflowEnvironment, tenant: str, run_id: str
) -> WorkflowExecutionDescription:
    """The run's workflow once Temporal shows it Canceled (the API's cancel closes it so)."""
    handle = dev_env.client.get_workflow_handle(workflow_id(tenant, run_id))
    for _ in range(100):
        description = await handle.describe()
        if description.status != WorkflowExecutionStatus.RUNNING:
            break
        await asyncio.sleep(0.1)
    assert description.status == WorkflowExecutionStatus.CANCELED
    return description


async def cancel_at_the_gate(http: httpx.AsyncClient, manifest: str) -> dict[str, object]:
    run_id = (await create_run(http, manifest))["runId"]
    state = await wait_for_run(http, run_id, status_is("awaiting-approval"))
    cancel = await http.post(f"{run_url(run_id)}/cancel", headers=APPROVER)
    assert cancel.status_code == 202, cancel.text
    return state


async def read_by_a_fresh_api(settings: Settings, run_id: str) -> httpx.Response:
    """GET the run through a new API that has never read it (what a restarted API meets)."""
    async with api(settings) as fresh:
        return await fresh.get(run_url(run_id), headers=READER)


class TestWorkerOutage:
    async def test_a_live_run_answers_its_last_known_state_marked_stale(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        settings = settings_for(dev_env, tmp_path)
        async with api(settings) as http:
            async with worker_for(dev_env.client, tmp_path, settings.task_queue):
                run_id = (await create_run(http, GATED))["runId"]
                await wait_for_run(http, run_id, status_is("awaiting-approval"))
            # The worker is gone: no one can answer the run's query now.
            time.sleep(2.5)  # older than any state the API may answer without asking
            began = time.monotonic()
            response = await http.get(run_url(run_id), headers=READER)
            took = time.monotonic() - began
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "awaiting-approval"
        assert "Stale" in response.headers["Warning"]
        assert int(response.headers["Age"]) >= 2
        assert took < settings.query_timeout_seconds / 2

    async def test_a_never_read_run_without_a_worker_is_a_503_not_a_guess(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        settings = settings_for(dev_env, tmp_path).model_copy(update={"query_timeout_seconds": 1.5})
        async with (
            worker_for(dev_env.client, tmp_path, settings.task_queue),
            api(settings) as http,
        ):
            run_id = (await create_run(http, GATED))["runId"]
            await wait_for_run(http, run_id, status_is("awaiting-approval"))
        response = await read_by_a_fresh_api(settings, run_id)
        assert response.status_code == 503, response.text
        assert "Retry-After" in response.headers

    async def test_a_finished_run_is_read_without_a_worker(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        settings = settings_for(dev_env, tmp_path)
        async with (
            worker_for(dev_env.client, tmp_path, settings.task_queue),
            api(settings) as http,
        ):
            run_id = (await create_run(http, ECHO, inputs={"who": "x"}))["runId"]
            await wait_for_run(http, run_id, status_is("succeeded"))
        # A new API (it knows nothing) and no worker at all: the server alone answers.
        async with api(settings) as fresh:
            response = await fresh.get(run_url(run_id), headers=READER)
            page = await fresh.get(run_url(run_id), headers=READER, params={"stepsOffset": 1})
        assert response.status_code == 200, response.text
        state = response.json()
        assert state["status"] == "succeeded"
        assert [s["stepId"] for s in state["steps"]] == ["hello", "done"]
        assert all(s["status"] == "Succeeded" for s in state["steps"])
        assert "Warning" not in response.headers
        assert page.status_code == 200 and [s["stepId"] for s in page.json()["steps"]] == ["done"]

    async def test_a_failed_run_is_read_without_a_worker(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        # Its workflow closed as Failed (no result): the state comes from the failure's detail.
        settings = settings_for(dev_env, tmp_path)
        async with (
            worker_for(dev_env.client, tmp_path, settings.task_queue),
            api(settings) as http,
        ):
            run_id = (await create_run(http, FAILING))["runId"]
            await wait_for_run(http, run_id, status_is("failed"))
        response = await read_by_a_fresh_api(settings, run_id)
        assert response.status_code == 200, response.text
        state = response.json()
        assert (state["status"], state["error"]) == ("failed", "step build failed (step-failed)")
        assert [s["status"] for s in state["steps"]] == ["Failed", "Skipped"]
        assert "Warning" not in response.headers

    async def test_a_cancelled_run_is_read_without_a_worker(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        # Its workflow closed as Canceled (no result): the state comes from the run's memo.
        settings = settings_for(dev_env, tmp_path)
        async with (
            worker_for(dev_env.client, tmp_path, settings.task_queue),
            api(settings) as http,
        ):
            state = await cancel_at_the_gate(http, GATED)
            await closed_canceled(dev_env, str(state["tenant"]), str(state["runId"]))
        response = await read_by_a_fresh_api(settings, str(state["runId"]))
        assert response.status_code == 200, response.text
        read = response.json()
        assert read["status"] == "cancelled"
        assert [(s["stepId"], s["status"]) for s in read["steps"]] == [
            ("build", "Succeeded"),
            ("approve-release", "Skipped"),  # cut off at the gate
            ("release", "Skipped"),
        ]
        assert [a["status"] for a in read["approvals"]] == ["cancelled"]
        assert "Warning" not in response.headers

    async def test_a_big_cancelled_run_reads_its_memo_and_asks_the_run_past_it(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        settings = settings_for(dev_env, tmp_path)
        async with (
            worker_for(dev_env.client, tmp_path, settings.task_queue),
            api(settings) as http,
        ):
            state = await cancel_at_the_gate(http, BIG)
            run_id, tenant = str(state["runId"]), str(state["tenant"])
            description = await closed_canceled(dev_env, tenant, run_id)
        held = await description.memo_value(MEMO_FINAL_STATE, type_hint=RunStateSnapshot)
        # The memo is bounded: only the first steps, and the true count.
        assert 10 < len(held.steps) < MANY_STEPS and held.totalSteps == MANY_STEPS + 1
        assert len(held.model_dump_json()) <= 64 * 1024
        names = ["wait"] + [f"a-step-with-a-fairly-long-name-{i:04d}" for i in range(MANY_STEPS)]
        past = {"stepsOffset": len(held.steps) + 5, "stepsLimit": 3}
        url = run_url(run_id)

        # No worker: a page the memo holds answers from the server alone.
        async with api(settings) as fresh:
            response = await fresh.get(url, headers=READER, params={"stepsLimit": 10})
            assert response.status_code == 200, response.text
            assert [s["stepId"] for s in response.json()["steps"]] == names[:10]
            assert response.json()["status"] == "cancelled"
            assert "Warning" not in response.headers
            listed = await fresh.get("/v1/task-runner/runs", headers=READER)
            assert listed.status_code == 200, listed.text
            (summary,) = [r for r in listed.json()["runs"] if r["runId"] == run_id]
            assert summary["status"] == "cancelled"

        # A page past it, and the whole run, come from the run's query once a worker is up.
        async with (
            worker_for(dev_env.client, tmp_path, settings.task_queue),
            api(settings) as fresh,
        ):
            page = await fresh.get(url, headers=READER, params=past)
            whole = await fresh.get(url, headers=READER)
        assert page.status_code == 200, page.text
        start = len(held.steps) + 5
        assert [s["stepId"] for s in page.json()["steps"]] == names[start : start + 3]
        assert page.json()["totalSteps"] == MANY_STEPS + 1
        assert whole.status_code == 200, whole.text
        assert [s["stepId"] for s in whole.json()["steps"]] == names


class TestConditionalReads:
    async def test_an_unchanged_state_is_a_304_and_a_changed_one_is_not(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        settings = settings_for(dev_env, tmp_path)
        async with (
            worker_for(dev_env.client, tmp_path, settings.task_queue),
            api(settings) as http,
        ):
            created = await create_run(http, GATED)
            run_id = created["runId"]
            await wait_for_run(http, run_id, status_is("awaiting-approval"))
            first = await http.get(run_url(run_id), headers=READER)
            etag = first.headers["ETag"]
            again = await http.get(run_url(run_id), headers={**READER, "If-None-Match": etag})
            assert again.status_code == 304, again.text
            assert again.content == b""
            decided = await http.post(
                f"{run_url(run_id)}/approvals/release-manager",
                json={"decision": "approved", "planHash": created["planHash"]},
                headers=APPROVER,
            )
            assert decided.status_code == 200, decided.text
            # Read your own write: the decision shows at once, under a new ETag.
            after = await http.get(run_url(run_id), headers={**READER, "If-None-Match": etag})
            assert after.status_code == 200
            assert after.headers["ETag"] != etag
            assert after.json()["approvals"][0]["status"] == "approved"
