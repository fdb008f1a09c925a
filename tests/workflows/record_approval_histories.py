"""Record histories of approval decisions for the replay test (tests/workflows/test_replay.py).

    .venv/bin/python -m tests.workflows.record_approval_histories LABEL

writes `histories/approvals-LABEL-<scenario>.json` for two scenarios:

- `expired-by-person`: someone sends `expired` long before the deadline of a 2-of-2 gate with
  `onExpiry: approve`, then two people approve;
- `late-signal`: the worker is down while the gate's deadline passes and the timer fires; an
  approval signal arrives after that, then the worker comes back.

The `before-rules` histories were recorded with the workflow code of main at 4677b03, before
issue #10's rules (there, the `expired` decision and the late signal were accepted): they must
keep replaying, which `workflow.patched` in PackRun sees to. `rules` is today's code.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import sysconfig
import tempfile
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from tests.helpers import start_pack, unique, wait_for, worker_for
from workflows.contract.names import SEARCH_ATTRIBUTES, SIGNAL_APPROVAL, UPDATE_DECIDE_APPROVAL
from workflows.contract.state import ApprovalOutcome, ApprovalSignal

HISTORIES = Path(__file__).parent / "histories"

PACK = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: approvals-history, version: 1.0.0}
spec:
  approvals: [{id: review, EXTRA}]
  steps:
    - {id: build, run: {uses: "builtin:noop"}}
    - {id: approve, gate: {approval: {id: review}}}
    - {id: deploy, run: {uses: "builtin:noop"}}
"""


def vote(plan_hash: str, actor: str, decision: str = "approved") -> ApprovalSignal:
    return ApprovalSignal.model_validate(
        {"approvalId": "review", "decision": decision, "planHash": plan_hash, "actorId": actor}
    )


async def expired_by_person(env: WorkflowEnvironment, data: Path) -> str:
    tq = unique("tq")
    pack = PACK.replace(
        "EXTRA", "requiredApprovals: 2, expiresAfterSeconds: 3600, onExpiry: approve"
    )
    async with worker_for(env.client, data, tq):
        handle = await start_pack(env.client, tq, pack, run_id=unique("expired-by-person"))
        state = await wait_for(handle, lambda s: s.status == "awaiting-approval")
        with contextlib.suppress(WorkflowUpdateFailedError):  # refused: people decide as usual
            await handle.execute_update(
                UPDATE_DECIDE_APPROVAL,
                vote(state.planHash, "user:mallory", "expired"),
                result_type=ApprovalOutcome,
            )
        state = await wait_for(handle, lambda s: True)
        if state.status == "awaiting-approval":
            for actor in ("user:alice", "user:bob"):
                await handle.execute_update(
                    UPDATE_DECIDE_APPROVAL, vote(state.planHash, actor), result_type=ApprovalOutcome
                )
        result = await handle.result()
        history = await handle.fetch_history()
    return f"{result.status}\n{history.to_json()}"


async def late_signal(env: WorkflowEnvironment, data: Path) -> str:
    tq = unique("tq")
    pack = PACK.replace("EXTRA", "expiresAfterSeconds: 2, onExpiry: reject")
    async with worker_for(env.client, data, tq):
        handle = await start_pack(env.client, tq, pack, run_id=unique("late-signal"))
        state = await wait_for(handle, lambda s: s.status == "awaiting-approval")
    for _ in range(100):
        events = (await handle.fetch_history()).events
        if any(e.event_type == EventType.EVENT_TYPE_TIMER_FIRED for e in events):
            break
        await asyncio.sleep(0.1)
    await handle.signal(SIGNAL_APPROVAL, vote(state.planHash, "user:alice"))
    async with worker_for(env.client, data, tq):
        result = await handle.result()
        history = await handle.fetch_history()
    return f"{result.status}\n{history.to_json()}"


async def record(label: str) -> None:
    scripts = Path(sysconfig.get_path("scripts"))
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(scripts / "temporal"),
        search_attributes=SEARCH_ATTRIBUTES,
    )
    try:
        for name, scenario in (
            ("expired-by-person", expired_by_person),
            ("late-signal", late_signal),
        ):
            status, history = (await scenario(env, Path(tempfile.mkdtemp()))).split("\n", 1)
            path = HISTORIES / f"approvals-{label}-{name}.json"
            path.write_text(history)
            print(f"wrote {path}: the run {status}")
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(record(sys.argv[1]))
