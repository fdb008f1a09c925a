"""Runs that ended, ended: a run Temporal terminated or timed out reads as failed everywhere and
every follow ends; a cancelled run's open approvals are cancelled; cut-off steps are logged."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import httpx
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from tests.api.packs import ECHO, FAILING, GATED, SLOW
from tests.api.support import (
    APPROVER,
    READER,
    create_run,
    error_code,
    run_url,
    status_is,
    wait_for_run,
)
from tests.helpers import start_pack, unique
from workflows.contract.names import workflow_id

GATE = "release-manager"


async def log_lines(http: httpx.AsyncClient, run_id: str, **params: Any) -> list[dict[str, Any]]:
    response = await http.get(f"{run_url(run_id)}/logs", params=params, headers=READER)
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


async def listed_status(http: httpx.AsyncClient, run_id: str) -> str | None:
    for _ in range(50):
        response = await http.get("/v1/task-runner/runs", headers=READER)
        assert response.status_code == 200, response.text
        found = [r for r in response.json()["runs"] if r["runId"] == run_id]
        if found and found[0]["status"] == "failed":
            return "failed"
        await asyncio.sleep(0.2)
    return found[0]["status"] if found else None


class TestTerminatedInTemporal:
    async def test_reads_failed_with_the_reason_and_every_follow_ends(
        self, http: httpx.AsyncClient, dev_env: WorkflowEnvironment
    ) -> None:
        # Issue #10: after Temporal's terminate, the run still said awaiting-approval, offered
        # `runs approve`, and `logs?follow=true` never ended.
        created = await create_run(http, GATED)
        run_id = created["runId"]
        state = await wait_for_run(http, run_id, status_is("awaiting-approval"))
        handle = dev_env.client.get_workflow_handle(workflow_id(state["tenant"], run_id))
        # A follow that is open when the run is cut off ends too.
        follow = asyncio.create_task(log_lines(http, run_id, follow="true"))
        await asyncio.sleep(0.5)
        await handle.terminate(reason="operator pulled the plug")

        lines = await asyncio.wait_for(follow, timeout=20)
        assert lines[-1]["eventType"] == "run.failed"
        assert "terminated in Temporal: operator pulled the plug" in lines[-1]["message"]
        state = await wait_for_run(http, run_id, status_is("failed"))
        assert "terminated in Temporal: operator pulled the plug" in state["error"]
        assert [(a["approvalId"], a["status"]) for a in state["approvals"]] == [(GATE, "cancelled")]
        gate = next(s for s in state["steps"] if s["kind"] == "GateApproval")
        assert (gate["status"], gate["statusReason"]) == ("Skipped", "run-terminated")
        assert await listed_status(http, run_id) == "failed"

        # A new follow, and one resuming after the last entry, end at once with the ending once.
        again = await asyncio.wait_for(log_lines(http, run_id, follow="true"), timeout=10)
        assert [e["sequence"] for e in again] == list(range(1, len(again) + 1))
        assert again[-1] == lines[-1]
        tail = await asyncio.wait_for(
            log_lines(http, run_id, follow="true", after=again[-1]["sequence"]), timeout=10
        )
        assert tail == []
        before_end = await log_lines(http, run_id, after=again[-1]["sequence"] - 1)
        assert [e["eventType"] for e in before_end] == ["run.failed"]

        body = {"decision": "approved", "planHash": state["planHash"]}
        decided = await http.post(
            f"{run_url(run_id)}/approvals/{GATE}", json=body, headers=APPROVER
        )
        assert (decided.status_code, error_code(decided)) == (409, "run_finished")

    async def test_a_run_timed_out_in_temporal_reads_failed(
        self, http: httpx.AsyncClient, stack: Any, dev_env: WorkflowEnvironment
    ) -> None:
        run_id = unique("run")
        # Started as the API starts runs, with an execution timeout only Temporal enforces.
        handle = await start_pack(
            dev_env.client,
            stack.settings.task_queue,
            GATED,
            run_id=run_id,
            execution_timeout=timedelta(seconds=3),
        )
        await wait_for_run(http, run_id, status_is("awaiting-approval"))
        state = await wait_for_run(http, run_id, status_is("failed"), timeout=30)
        assert state["error"].startswith("timed out in Temporal")
        assert state["approvals"][0]["status"] == "cancelled"
        lines = await asyncio.wait_for(log_lines(http, run_id, follow="true"), timeout=10)
        assert lines[-1]["eventType"] == "run.failed"
        assert handle.id == workflow_id("default", run_id)


class TestCancelled:
    async def test_open_approvals_are_cancelled_and_the_gate_logs_why(
        self, http: httpx.AsyncClient
    ) -> None:
        created = await create_run(http, GATED)
        run_id = created["runId"]
        await wait_for_run(http, run_id, status_is("awaiting-approval"))
        cancel = await http.post(f"{run_url(run_id)}/cancel", headers=APPROVER)
        assert cancel.status_code == 202, cancel.text
        state = await wait_for_run(http, run_id, status_is("cancelled"))
        assert state["approvals"][0]["status"] == "cancelled"
        entries = await log_lines(http, run_id)
        skipped = [e for e in entries if e["eventType"] == "step.skipped"]
        assert [(e["stepId"], e["message"]) for e in skipped] == [
            ("approve-release", "Step skipped (cancelled): approve-release")
        ]
        cancelled = [e for e in entries if e["eventType"] == "gate.cancelled"]
        assert [e["metadata"]["approvalId"] for e in cancelled] == [GATE]

    async def test_a_step_cut_off_mid_run_logs_its_failure(self, http: httpx.AsyncClient) -> None:
        created = await create_run(http, SLOW)
        run_id = created["runId"]
        await wait_for_run(http, run_id, lambda s: s["steps"][0]["status"] == "Running")
        cancel = await http.post(f"{run_url(run_id)}/cancel", headers=APPROVER)
        assert cancel.status_code == 202, cancel.text
        await wait_for_run(http, run_id, status_is("cancelled"))
        entries = await log_lines(http, run_id)
        failed = [e for e in entries if e["eventType"] == "step.failed"]
        assert [(e["stepId"], e["metadata"].get("reason")) for e in failed] == [
            ("wait", "cancelled")
        ]


async def execution_status(
    dev_env: WorkflowEnvironment, tenant: str, run_id: str
) -> WorkflowExecutionStatus | None:
    """How the Temporal Web UI shows the run's workflow, once it has closed."""
    handle = dev_env.client.get_workflow_handle(workflow_id(tenant, run_id))
    for _ in range(100):
        status = (await handle.describe()).status
        if status != WorkflowExecutionStatus.RUNNING:
            return status
        await asyncio.sleep(0.1)
    return WorkflowExecutionStatus.RUNNING


class TestTemporalSeesTheOutcome:
    """Issue #14: in the Web UI a failed or cancelled run showed as Completed, so its status
    filter and Failures count lied. The API's view of such runs stays what it was."""

    async def test_a_failed_run_closes_failed_and_reads_failed_with_its_reason(
        self, http: httpx.AsyncClient, dev_env: WorkflowEnvironment
    ) -> None:
        created = await create_run(http, FAILING)
        run_id = created["runId"]
        state = await wait_for_run(http, run_id, status_is("failed", "succeeded"))
        assert state["status"] == "failed"
        # The run's own reason, not Temporal's ("failed in Temporal: ...").
        assert state["error"] == "step build failed (step-failed)"
        assert [s["status"] for s in state["steps"]] == ["Failed", "Skipped"]
        status = await execution_status(dev_env, state["tenant"], run_id)
        assert status == WorkflowExecutionStatus.FAILED

        # Read again through a fresh query path (the listing, the log) it says the same.
        assert await listed_status(http, run_id) == "failed"
        entries = await log_lines(http, run_id)
        assert entries[-1]["eventType"] == "run.failed"
        assert [e["eventType"] for e in entries].count("run.failed") == 1  # no synthetic ending
        follow = await asyncio.wait_for(log_lines(http, run_id, follow="true"), timeout=10)
        assert follow == entries
        evidence = await http.get(f"{run_url(run_id)}/evidence", headers=READER)
        assert evidence.status_code == 200, evidence.text
        redrive = await http.post(f"{run_url(run_id)}/redrive", json={}, headers=APPROVER)
        assert redrive.status_code in (201, 202), redrive.text

    async def test_a_run_cancelled_through_the_api_closes_canceled(
        self, http: httpx.AsyncClient, dev_env: WorkflowEnvironment
    ) -> None:
        created = await create_run(http, GATED)
        run_id = created["runId"]
        await wait_for_run(http, run_id, status_is("awaiting-approval"))
        cancel = await http.post(f"{run_url(run_id)}/cancel", headers=APPROVER)
        assert cancel.status_code == 202, cancel.text
        state = await wait_for_run(http, run_id, status_is("cancelled"))
        status = await execution_status(dev_env, state["tenant"], run_id)
        assert status == WorkflowExecutionStatus.CANCELED
        state = await wait_for_run(http, run_id, status_is("cancelled"))
        assert "error" not in state or "in Temporal" not in (state["error"] or "")
        entries = await log_lines(http, run_id)
        requested = [e for e in entries if e["eventType"] == "run.cancel-requested"]
        # Who asked, from the API's signal, even though Temporal's own request closed it.
        assert len(requested) == 1 and requested[0]["metadata"]["actor"]
        assert entries[-1]["eventType"] == "run.cancelled"
        assert await listed_status_is(http, run_id, "cancelled")

    async def test_a_cancel_of_a_run_that_already_succeeded_leaves_it_completed(
        self, http: httpx.AsyncClient, dev_env: WorkflowEnvironment
    ) -> None:
        created = await create_run(http, ECHO, inputs={"who": "x"})
        run_id = created["runId"]
        state = await wait_for_run(http, run_id, status_is("succeeded"))
        cancel = await http.post(f"{run_url(run_id)}/cancel", headers=APPROVER)
        assert cancel.status_code == 409, cancel.text
        status = await execution_status(dev_env, state["tenant"], run_id)
        assert status == WorkflowExecutionStatus.COMPLETED


async def listed_status_is(http: httpx.AsyncClient, run_id: str, wanted: str) -> bool:
    for _ in range(50):
        response = await http.get("/v1/task-runner/runs", headers=READER)
        found = [r for r in response.json()["runs"] if r["runId"] == run_id]
        if found and found[0]["status"] == wanted:
            return True
        await asyncio.sleep(0.2)
    return False
