"""Approval gates: signal and update, quorum, refusals, rejection, expiry, and policy gates."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from tests.helpers import (
    logs_of,
    result_of,
    run_to_end,
    start_pack,
    state_of,
    steps_by_id,
    unique,
    wait_for,
    worker_for,
)
from workflows.contract.names import SIGNAL_APPROVAL, UPDATE_DECIDE_APPROVAL
from workflows.contract.state import ApprovalOutcome, ApprovalSignal

GATED = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: gated, version: 1.0.0}
spec:
  approvals:
    - {id: review, grants: [packs.approve], requiredApprovals: REQUIRED EXPIRY}
  steps:
    - {id: build, run: {uses: "builtin:echo", with: {built: true}}}
    - id: approve
      gate: {approval: {id: review, message: "Ship it?"}}
    - {id: deploy, run: {uses: "builtin:noop"}}
"""


def gated(required: int = 1, expiry: str = "") -> str:
    return GATED.replace("REQUIRED", str(required)).replace("EXPIRY", expiry)


def awaiting(state) -> bool:  # type: ignore[no-untyped-def]
    return state.status == "awaiting-approval"


async def eventually_listed(client, query: str) -> bool:  # type: ignore[no-untyped-def]
    """Visibility is eventually consistent: poll a list query for a few seconds."""
    for _ in range(50):
        if [w async for w in client.list_workflows(query)]:
            return True
        await asyncio.sleep(0.1)
    return False


def decision(plan_hash: str, actor: str, verdict: str = "approved") -> ApprovalSignal:
    return ApprovalSignal(
        approvalId="review",
        decision=verdict,
        planHash=plan_hash,
        actorId=actor,
        summary="ok",  # type: ignore[arg-type]
    )


async def decide(handle, signal: ApprovalSignal) -> ApprovalOutcome:  # type: ignore[no-untyped-def]
    return await handle.execute_update(UPDATE_DECIDE_APPROVAL, signal, result_type=ApprovalOutcome)


class TestApprovalGate:
    async def test_waits_then_approved_by_update(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        client = dev_env.client
        tq = unique("tq")
        async with worker_for(client, tmp_path, tq):
            handle = await start_pack(client, tq, gated())
            state = await wait_for(handle, awaiting)
            gate = steps_by_id(state)["approve"]
            assert (gate.status, gate.statusReason) == ("Pending", "awaiting-approval")
            assert gate.gateMessage == "Ship it?"
            assert steps_by_id(state)["deploy"].status == "Pending"
            # Operators find it with one Web UI filter: TaskRunnerStatus is kept current.
            query = f"TaskRunnerStatus = 'awaiting-approval' AND WorkflowId = '{handle.id}'"
            assert await eventually_listed(client, query)
            metadata = await handle.query(
                "__temporal_workflow_metadata", result_type=WorkflowMetadata
            )
            assert "Waiting for approval **review**" in metadata.current_details
            outcome = await decide(handle, decision(state.planHash, "user:alice"))
            assert (outcome.status, outcome.resumed) == ("approved", True)
            result = await result_of(handle)
            assert result.status == "succeeded"
            state = await state_of(handle)
            approval = state.approvals[0]
            assert approval.status == "approved"
            assert approval.decisions[0].actorId == "user:alice"
            assert approval.decisions[0].summary == "ok"
            events = [e.eventType for e in await logs_of(handle)]
            assert events.index("gate.awaiting") < events.index("gate.approved")
            assert await eventually_listed(
                client, f"TaskRunnerStatus = 'succeeded' AND WorkflowId = '{handle.id}'"
            )

    async def test_signal_approves_for_chat_bots(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        client = dev_env.client
        tq = unique("tq")
        async with worker_for(client, tmp_path, tq):
            handle = await start_pack(client, tq, gated())
            state = await wait_for(handle, awaiting)
            # A stale plan hash by signal is refused and logged, not applied.
            await handle.signal(SIGNAL_APPROVAL, decision("sha256:" + "0" * 64, "bot"))
            # A hand-typed payload missing fields is refused in the run's log, not dropped.
            await handle.signal(SIGNAL_APPROVAL, {"approvalId": "review", "decision": "approved"})
            await handle.signal(SIGNAL_APPROVAL, decision(state.planHash, "bot"))
            assert (await result_of(handle)).status == "succeeded"
            logs = await logs_of(handle)
            refused = [e for e in logs if e.eventType == "gate.decision-refused"]
            assert [e.metadata["error"] for e in refused] == ["PlanHashMismatch", "InvalidPayload"]
            assert "planHash" in refused[1].message

    async def test_rejection_fails_gate_and_run(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        client = dev_env.client
        tq = unique("tq")
        async with worker_for(client, tmp_path, tq):
            handle = await start_pack(client, tq, gated())
            state = await wait_for(handle, awaiting)
            outcome = await decide(handle, decision(state.planHash, "user:bob", "rejected"))
            assert (outcome.status, outcome.resumed) == ("rejected", False)
            assert (await result_of(handle)).status == "failed"
            steps = steps_by_id(await state_of(handle))
            assert (steps["approve"].status, steps["approve"].statusReason) == (
                "Failed",
                "approval-rejected",
            )
            assert steps["deploy"].status == "Skipped"
            assert "gate.rejected" in [e.eventType for e in await logs_of(handle)]

    async def test_quorum_of_two_distinct_actors(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        client = dev_env.client
        tq = unique("tq")
        async with worker_for(client, tmp_path, tq):
            handle = await start_pack(client, tq, gated(required=2))
            state = await wait_for(handle, awaiting)
            first = await decide(handle, decision(state.planHash, "user:alice"))
            assert (first.resumed, first.approvals, first.requiredApprovals) == (False, 1, 2)
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await decide(handle, decision(state.planHash, "user:alice"))
            assert isinstance(refused.value.cause, ApplicationError)
            assert refused.value.cause.type == "DuplicateApprover"
            assert (await state_of(handle)).status == "awaiting-approval"
            second = await decide(handle, decision(state.planHash, "user:carol"))
            assert (second.resumed, second.approvals) == (True, 2)
            assert (await result_of(handle)).status == "succeeded"

    async def test_update_refuses_wrong_hash_and_unknown_or_decided_gate(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        client = dev_env.client
        tq = unique("tq")
        async with worker_for(client, tmp_path, tq):
            handle = await start_pack(client, tq, gated())
            state = await wait_for(handle, awaiting)
            cases = [
                (decision("sha256:" + "1" * 64, "user:x"), "PlanHashMismatch"),
                (
                    ApprovalSignal(approvalId="nope", decision="approved", planHash=state.planHash),
                    "ApprovalNotFound",
                ),
            ]
            for signal, expected in cases:
                with pytest.raises(WorkflowUpdateFailedError) as refused:
                    await decide(handle, signal)
                assert refused.value.cause.type == expected  # type: ignore[union-attr]
            await decide(handle, decision(state.planHash, "user:a"))
            await result_of(handle)
            # Refused updates write nothing to history: the approval holds exactly one decision.
            assert len((await state_of(handle)).approvals[0].decisions) == 1


class TestExpiry:
    async def test_expires_on_a_durable_timer(
        self, skip_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        client = skip_env.client
        tq = unique("tq")
        async with worker_for(client, tmp_path, tq):
            handle = await start_pack(
                client, tq, gated(expiry=", expiresAfterSeconds: 3600"), search_attributes=False
            )
            result = await result_of(handle)
            assert result.status == "failed"
            state = await state_of(handle)
            assert state.approvals[0].status == "expired"
            assert steps_by_id(state)["approve"].statusReason == "approval-expired"
            assert "gate.expired" in [e.eventType for e in await logs_of(handle)]

    async def test_on_expiry_approve_continues(
        self, skip_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        client = skip_env.client
        tq = unique("tq")
        async with worker_for(client, tmp_path, tq):
            manifest = gated(expiry=", expiresAfterSeconds: 60, onExpiry: approve")
            handle = await start_pack(client, tq, manifest, search_attributes=False)
            assert (await result_of(handle)).status == "succeeded"

    async def test_retry_backoff_shows_attempts(
        self, skip_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        manifest = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: retry, version: 1.0.0}
spec:
  failure: {maxAttempts: 3, backoffSeconds: 600}
  steps:
    - {id: flaky, run: {uses: "builtin:fail", with: {message: nope}}}
"""
        client = skip_env.client
        tq = unique("tq")
        async with worker_for(client, tmp_path, tq):
            handle = await start_pack(client, tq, manifest, search_attributes=False)
            start = await skip_env.get_current_time()
            result = await result_of(handle)
            elapsed = await skip_env.get_current_time() - start
            assert result.status == "failed"
            step = steps_by_id(await state_of(handle))["flaky"]
            assert step.attempts == 3
            assert elapsed >= timedelta(seconds=1200)
            retrying = [e for e in await logs_of(handle) if e.eventType == "step.retrying"]
            assert len(retrying) == 2 and "nextAttemptAt" in retrying[0].metadata


POLICY = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: policy, version: 1.0.0}
spec:
  inputs: [{name: severity, type: integer, default: 9}]
  approvals: [{id: override, grants: [sec]}]
  policies:
    - {id: low-risk, version: "2", condition: "inputs.severity < `5`"}
  steps:
    - id: check
      gate:
        policy:
          policy: low-risk
          failureAction: ACTION
          ELSE
    - {id: after, run: {uses: "builtin:noop"}}
"""


def policy_pack(action: str) -> str:
    extra = ""
    if action == "requestOverride":
        extra = "approvalId: override"
    if action == "branch":
        extra = 'else: [{id: fallback, run: {uses: "builtin:echo", with: {plan: b}}}]'
    return POLICY.replace("ACTION", action).replace("ELSE", extra)


class TestPolicyGate:
    async def test_passes(self, dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
        result, _, logs = await run_to_end(
            dev_env.client, tmp_path, policy_pack("abort"), {"severity": 1}
        )
        assert result.status == "succeeded"
        assert "policy.passed" in [e.eventType for e in logs]

    async def test_abort(self, dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
        result, state, _ = await run_to_end(dev_env.client, tmp_path, policy_pack("abort"))
        assert result.status == "failed"
        steps = steps_by_id(state)
        assert (steps["check"].status, steps["check"].statusReason) == ("Failed", "policy-failed")
        assert steps["after"].status == "Skipped"

    async def test_warn(self, dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
        result, state, _ = await run_to_end(dev_env.client, tmp_path, policy_pack("warn"))
        assert result.status == "succeeded"
        assert steps_by_id(state)["check"].statusReason == "policy-warned"

    async def test_branch_runs_else(self, dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
        result, state, _ = await run_to_end(dev_env.client, tmp_path, policy_pack("branch"))
        assert result.status == "succeeded"
        steps = steps_by_id(state)
        assert steps["fallback"].outputs == {"plan": "b"}
        assert steps["check"].statusReason == "policy-branch"

    async def test_request_override_waits_for_approval(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        tq = unique("tq")
        async with worker_for(dev_env.client, tmp_path, tq):
            handle = await start_pack(dev_env.client, tq, policy_pack("requestOverride"))
            state = await wait_for(handle, awaiting)
            assert steps_by_id(state)["check"].statusReason == "awaiting-approval"
            signal = ApprovalSignal(
                approvalId="override",
                decision="approved",
                planHash=state.planHash,
                actorId="sec:lead",
            )
            await decide(handle, signal)
            assert (await result_of(handle)).status == "succeeded"
            assert steps_by_id(await state_of(handle))["check"].statusReason == "override-approved"

    async def test_retry_count_reevaluates(
        self, skip_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        tq = unique("tq")
        manifest = policy_pack("abort").replace(
            "failureAction: abort", "failureAction: abort\n          retryCount: 2"
        )
        async with worker_for(skip_env.client, tmp_path, tq):
            handle = await start_pack(skip_env.client, tq, manifest, search_attributes=False)
            assert (await result_of(handle)).status == "failed"
            assert steps_by_id(await state_of(handle))["check"].attempts == 3
