"""Runs that ended, ended: a run Temporal terminated or timed out reads as failed everywhere and
every follow ends; a cancelled run's open approvals are cancelled; cut-off steps are logged."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import httpx
from temporalio.testing import WorkflowEnvironment

from tests.api.packs import GATED, SLOW
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
