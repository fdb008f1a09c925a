"""Approvals count people, not requests: `expired` is the deadline's word, the deadline is
absolute, the requester may be kept out, quorum seats per grant, and every refusal is logged.

Each test here is one of issue #10's bypasses, tried against a real Temporal server.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from tests.helpers import logs_of, result_of, start_pack, state_of, unique, wait_for, worker_for
from workflows.contract.names import SIGNAL_APPROVAL, UPDATE_DECIDE_APPROVAL
from workflows.contract.state import ApprovalOutcome, ApprovalSignal, LogEntry, RunStateSnapshot
from workflows.worker import WORKFLOWS

PACK = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: rules, version: 1.0.0}
spec:
  approvals:
    - {id: review, APPROVAL}
  steps:
    - {id: build, run: {uses: "builtin:echo", with: {built: true}}}
    - {id: approve, gate: {approval: {id: review}}}
    - {id: deploy, run: {uses: "builtin:noop"}}
"""


def pack(approval: str) -> str:
    return PACK.replace("APPROVAL", approval)


def awaiting(state: RunStateSnapshot) -> bool:
    return state.status == "awaiting-approval"


def vote(plan_hash: str, actor: str, verdict: str = "approved", **extra: Any) -> ApprovalSignal:
    return ApprovalSignal.model_validate(
        {"approvalId": "review", "decision": verdict, "planHash": plan_hash, "actorId": actor}
        | extra
    )


async def decide(handle: WorkflowHandle[Any, Any], signal: ApprovalSignal) -> ApprovalOutcome:
    outcome: ApprovalOutcome = await handle.execute_update(
        UPDATE_DECIDE_APPROVAL, signal, result_type=ApprovalOutcome
    )
    return outcome


async def refused_update(handle: WorkflowHandle[Any, Any], signal: ApprovalSignal) -> str:
    """The refusal code of a decision the workflow turns down."""
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await decide(handle, signal)
    cause = refused.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type is not None
    return cause.type


async def refusals(handle: WorkflowHandle[Any, Any], count: int) -> list[LogEntry]:
    """The run's `gate.decision-refused` entries, once there are `count` of them."""
    for _ in range(100):
        found = [e for e in await logs_of(handle) if e.eventType == "gate.decision-refused"]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {count} refusals, found {len(found)}")


class TestExpiredIsTheDeadlinesWord:
    async def test_expired_before_the_deadline_is_refused_by_update_and_signal(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        # Issue #10 (a): `expired` from one operator passed a 2-of-2 gate with onExpiry: approve.
        client = dev_env.client
        tq = unique("tq")
        manifest = pack("requiredApprovals: 2, expiresAfterSeconds: 3600, onExpiry: approve")
        async with worker_for(client, tmp_path, tq):
            handle = await start_pack(client, tq, manifest)
            state = await wait_for(handle, awaiting)
            code = await refused_update(handle, vote(state.planHash, "user:mallory", "expired"))
            assert code == "ExpiredByPerson"
            await handle.signal(SIGNAL_APPROVAL, vote(state.planHash, "user:mallory", "expired"))
            logged = await refusals(handle, 2)
            assert [(e.metadata["error"], e.metadata["via"]) for e in logged] == [
                ("ExpiredByPerson", "rest"),
                ("ExpiredByPerson", "signal"),
            ]
            assert all(e.metadata["actorId"] == "user:mallory" for e in logged)
            assert all(e.timestamp and "deadline" in e.message for e in logged)
            state = await state_of(handle)
            assert state.status == "awaiting-approval"
            assert (state.approvals[0].status, state.approvals[0].decisions) == ("pending", [])
            # People still decide as usual, and `resumed` says when the run moved on.
            first = await decide(handle, vote(state.planHash, "user:alice"))
            assert (first.resumed, first.missing) == (False, ["1 more approver"])
            second = await decide(handle, vote(state.planHash, "user:bob"))
            assert (second.status, second.resumed) == ("approved", True)
            assert (await result_of(handle)).status == "succeeded"
            decisions = (await state_of(handle)).approvals[0].decisions
            assert [(d.actorId, d.via) for d in decisions] == [
                ("user:alice", "rest"),
                ("user:bob", "rest"),
            ]


class TestAbsoluteDeadline:
    async def test_a_signal_reaching_the_worker_after_the_timer_fired_is_refused(
        self, skip_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        # Issue #10: expiresAfterSeconds 5, onExpiry reject, the worker down, and the approval
        # signal sent 4 s after the timer fired in history: the gate ended approved, the run
        # succeeded.
        client = skip_env.client
        tq = unique("tq")
        manifest = pack("expiresAfterSeconds: 5, onExpiry: reject")
        # No sticky cache, so the next task goes to whichever worker polls the queue next.
        async with worker_for(client, tmp_path, tq, max_cached_workflows=0):
            handle = await start_pack(client, tq, manifest, search_attributes=False)
            state = await wait_for(handle, awaiting)
        expires_at = datetime.fromisoformat(state.approvals[0].expiresAt or "")
        # No worker: the server fires the timer and records it; nothing handles it yet.
        await skip_env.sleep(5 + 4)
        assert await timer_fired(handle)
        await handle.signal(SIGNAL_APPROVAL, vote(state.planHash, "user:alice"))
        async with worker_for(client, tmp_path, tq):
            result = await result_of(handle)
            assert result.status == "failed"
            state = await state_of(handle)
            logs = await logs_of(handle)
        approval = state.approvals[0]
        assert (approval.status, approval.decisions) == ("expired", [])
        refused = [e for e in logs if e.eventType == "gate.decision-refused"]
        assert [(e.metadata["error"], e.metadata["via"]) for e in refused] == [
            ("ApprovalExpired", "signal")
        ]
        assert datetime.fromisoformat(refused[0].timestamp) >= expires_at
        # The history of this order (timer, then signal, in one task) replays.
        history = await handle.fetch_history()
        replayer = Replayer(workflows=list(WORKFLOWS), data_converter=pydantic_data_converter)
        replayed = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert replayed.replay_failure is None

    async def test_an_update_after_the_deadline_is_refused(
        self, skip_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        client = skip_env.client
        tq = unique("tq")
        manifest = pack("expiresAfterSeconds: 5, onExpiry: approve")
        async with worker_for(client, tmp_path, tq, max_cached_workflows=0):
            handle = await start_pack(client, tq, manifest, search_attributes=False)
            state = await wait_for(handle, awaiting)
        # The worker is down past the deadline; the decision reaches it with the timer.
        await skip_env.sleep(5 + 1)
        async with worker_for(client, tmp_path, tq):
            code = await refused_update(handle, vote(state.planHash, "user:alice", "rejected"))
            assert code == "ApprovalExpired"
            assert (await result_of(handle)).status == "succeeded"  # the timer's outcome stands
            approval = (await state_of(handle)).approvals[0]
            assert (approval.status, approval.decisions) == ("expired", [])
            assert (await refusals(handle, 1))[0].metadata["error"] == "ApprovalExpired"


async def timer_fired(handle: WorkflowHandle[Any, Any]) -> bool:
    history = await handle.fetch_history()
    return any(e.event_type == EventType.EVENT_TYPE_TIMER_FIRED for e in history.events)


class TestRequester:
    async def test_the_requester_cannot_decide_unless_the_pack_allows_it(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        client = dev_env.client
        tq = unique("tq")
        async with worker_for(client, tmp_path, tq):
            handle = await start_pack(client, tq, pack("grants: []"), actor="user:rita")
            state = await wait_for(handle, awaiting)
            assert state.approvals[0].allowRequester is False
            for verdict in ("approved", "rejected"):
                code = await refused_update(handle, vote(state.planHash, "user:rita", verdict))
                assert code == "RequesterNotAllowed"
            await handle.signal(SIGNAL_APPROVAL, vote(state.planHash, "user:rita"))
            logged = await refusals(handle, 3)
            assert {e.metadata["error"] for e in logged} == {"RequesterNotAllowed"}
            assert (await state_of(handle)).status == "awaiting-approval"
            outcome = await decide(handle, vote(state.planHash, "user:bob"))
            assert outcome.resumed is True
            assert (await result_of(handle)).status == "succeeded"

            allowed = await start_pack(client, tq, pack("allowRequester: true"), actor="user:rita")
            state = await wait_for(allowed, awaiting)
            assert (await decide(allowed, vote(state.planHash, "user:rita"))).resumed is True

    async def test_the_anonymous_dev_actor_is_exempt(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        # Auth-off dev mode: one anonymous person starts and approves (the README walk-through).
        client = dev_env.client
        tq = unique("tq")
        async with worker_for(client, tmp_path, tq):
            handle = await start_pack(client, tq, pack("grants: []"), actor="anonymous")
            state = await wait_for(handle, awaiting)
            assert (await decide(handle, vote(state.planHash, "anonymous"))).resumed is True
            assert (await result_of(handle)).status == "succeeded"


class TestGroupQuorum:
    async def test_one_holder_of_each_grant_each_a_distinct_person(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        client = dev_env.client
        tq = unique("tq")
        approval = "quorum: [{grant: sre.approve}, {grant: security.approve}]"
        async with worker_for(client, tmp_path, tq):
            handle = await start_pack(client, tq, pack(approval))
            state = await wait_for(handle, awaiting)
            assert state.approvals[0].missing == [
                "1 holder of sre.approve",
                "1 holder of security.approve",
            ]
            both = ["sre.approve", "security.approve"]
            first = await decide(handle, vote(state.planHash, "user:alice", grants=both))
            assert (first.resumed, first.approvals, first.requiredApprovals) == (False, 1, 2)
            assert len(first.missing) == 1
            # alice again, under her other grant: one person, one seat.
            assert (
                await refused_update(handle, vote(state.planHash, "user:alice", grants=both))
                == "DuplicateApprover"
            )
            # carol holds no grant of the open seat.
            assert await refused_update(handle, vote(state.planHash, "user:carol")) == "NoOpenSeat"
            waiting = await state_of(handle)
            assert waiting.status == "awaiting-approval"
            assert waiting.approvals[0].missing == first.missing
            # bob holds sre only: alice moves to the security seat, and the gate is complete.
            second = await decide(handle, vote(state.planHash, "user:bob", grants=["sre.approve"]))
            assert (second.resumed, second.missing) == (True, [])
            assert (await result_of(handle)).status == "succeeded"
            decisions = (await state_of(handle)).approvals[0].decisions
            assert [(d.actorId, d.grants) for d in decisions] == [
                ("user:alice", both),
                ("user:bob", ["sre.approve"]),
            ]
            assert decisions[1].seat == "sre.approve"
            logs = await logs_of(handle)
            assert [
                e.metadata["error"] for e in logs if e.eventType == "gate.decision-refused"
            ] == [
                "DuplicateApprover",
                "NoOpenSeat",
            ]
            vote_entry = next(e for e in logs if e.eventType == "gate.vote")
            assert "still needs 1 holder of" in vote_entry.message
