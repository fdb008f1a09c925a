"""Cancellation (signal and Temporal's own request), pack outputs and artifacts, continue-as-new."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from tests.helpers import (
    logs_of,
    result_of,
    start_pack,
    state_of,
    steps_by_id,
    unique,
    wait_for,
    whole_log,
    worker_for,
)
from workflows.contract.activities import ArtifactRecord
from workflows.contract.names import QUERY_ARTIFACTS, SIGNAL_CANCEL, UPDATE_DECIDE_APPROVAL
from workflows.contract.state import ApprovalOutcome, ApprovalSignal, CancelSignal
from workflows.pack_run import TEMPORAL_CANCEL_WAIT

SLOW = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: slow, version: 1.0.0}
spec:
  approvals: [{id: go}]
  steps:
    - {id: first, run: {uses: "builtin:echo", with: {done: true}}}
    - {id: long, run: {uses: "builtin:shell", with: {command: "sleep 60; echo finished > marker"}}}
    - {id: gate, gate: {approval: {id: go}}}
    - {id: last, run: {uses: "builtin:noop"}}
"""

AT_GATE = SLOW.replace(
    '{id: long, run: {uses: "builtin:shell", with: {command: "sleep 60; echo finished > marker"}}}',
    '{id: long, run: {uses: "builtin:noop"}}',
)


def running(step_id: str):  # type: ignore[no-untyped-def]
    return lambda s: steps_by_id(s)[step_id].status == "Running"


class TestCancel:
    async def test_signal_mid_step_cancels_activity_and_skips_the_rest(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        client = dev_env.client
        tq = unique("tq")
        async with worker_for(client, tmp_path, tq):
            handle = await start_pack(client, tq, SLOW, heartbeatTimeoutSeconds=5)
            await wait_for(handle, running("long"))
            await handle.signal(SIGNAL_CANCEL, CancelSignal(actorId="user:ops", reason="wrong day"))
            result = await result_of(handle)
            assert result.status == "cancelled"
            steps = steps_by_id(await state_of(handle))
            assert steps["first"].status == "Succeeded"  # finished steps keep their status
            assert (steps["long"].status, steps["long"].statusReason) == ("Failed", "cancelled")
            assert (steps["gate"].status, steps["gate"].statusReason) == ("Skipped", "cancelled")
            assert (steps["last"].status, steps["last"].statusReason) == ("Skipped", "cancelled")
            events = [e.eventType for e in await logs_of(handle)]
            assert events.index("run.cancel-requested") < events.index("run.cancelled")
            assert events[-1] == "run.cancelled"
        # The shell command was killed: it never got to write its marker.
        assert not list(tmp_path.rglob("marker"))

    async def test_signal_at_gate(self, dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
        client = dev_env.client
        tq = unique("tq")
        async with worker_for(client, tmp_path, tq):
            handle = await start_pack(client, tq, AT_GATE)
            await wait_for(handle, lambda s: s.status == "awaiting-approval")
            await handle.signal(SIGNAL_CANCEL, CancelSignal())
            assert (await result_of(handle)).status == "cancelled"
            steps = steps_by_id(await state_of(handle))
            assert (steps["gate"].status, steps["gate"].statusReason) == ("Skipped", "cancelled")
            assert steps["long"].status == "Succeeded"

    async def test_temporal_cancel_request_ends_run_cancelled(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        client = dev_env.client
        tq = unique("tq")
        async with worker_for(client, tmp_path, tq):
            handle = await start_pack(client, tq, AT_GATE)
            await wait_for(handle, lambda s: s.status == "awaiting-approval")
            await handle.cancel()  # what the Web UI's "Cancel" button sends
            with pytest.raises(WorkflowFailureError):
                await result_of(handle)
            state = await state_of(handle)
            assert state.status == "cancelled"
            events = [e.eventType for e in await logs_of(handle)]
            assert "run.cancel-requested" in events and events[-1] == "run.cancelled"


class TestHowACancelledRunCloses:
    """Temporal's status of a cancelled run: Canceled only when Temporal's own cancel request
    came; a run told by the signal that one follows waits a while for it."""

    async def test_a_signal_alone_closes_completed(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        client = dev_env.client
        tq = unique("tq")
        async with worker_for(client, tmp_path, tq):
            handle = await start_pack(client, tq, AT_GATE)
            await wait_for(handle, lambda s: s.status == "awaiting-approval")
            await handle.signal(SIGNAL_CANCEL, CancelSignal(actorId="user:ops"))
            assert (await result_of(handle)).status == "cancelled"
            assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED

    async def test_the_signal_then_temporals_request_closes_canceled(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        client = dev_env.client
        tq = unique("tq")
        async with worker_for(client, tmp_path, tq):
            handle = await start_pack(client, tq, AT_GATE)
            await wait_for(handle, lambda s: s.status == "awaiting-approval")
            signal = CancelSignal(
                actorId="user:ops", reason="wrong day", temporalCancelFollows=True
            )
            await handle.signal(SIGNAL_CANCEL, signal)
            await asyncio.sleep(1)  # the run has ended and waits for the request
            await handle.cancel(reason="wrong day")
            with pytest.raises(WorkflowFailureError):
                await handle.result()
            assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
            state = await state_of(handle)
            assert state.status == "cancelled"
            requested = [e for e in await logs_of(handle) if e.eventType == "run.cancel-requested"]
            # One request in the log, the signal's, with who and why.
            assert [(e.metadata.get("actor"), e.metadata.get("reason")) for e in requested] == [
                ("user:ops", "wrong day")
            ]

    async def test_a_request_announced_that_never_comes_closes_completed_after_the_wait(
        self, skip_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        # The API died between its signal and its request: the run does not wait forever.
        client = skip_env.client
        tq = unique("tq")
        async with worker_for(client, tmp_path, tq):
            handle = await start_pack(client, tq, AT_GATE, search_attributes=False)
            await wait_for(handle, lambda s: s.status == "awaiting-approval")
            await handle.signal(SIGNAL_CANCEL, CancelSignal(temporalCancelFollows=True))
            result = await result_of(handle)  # time skips over the wait
            assert result.status == "cancelled"
            described = await handle.describe()
            assert described.status == WorkflowExecutionStatus.COMPLETED
            waited = (described.close_time or described.start_time) - described.start_time
            assert waited >= TEMPORAL_CANCEL_WAIT


OUTPUTS = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: outputs, version: 1.0.0}
spec:
  steps:
    - id: report
      run: {uses: "builtin:shell", with: {command: "mkdir -p out && echo '{\\"ok\\": true}' > out/report.json && echo done"}}
  outputs:
    - {name: report, type: file, path: out/report.json}
    - {name: missing, type: file, path: out/nothing.txt}
    - {name: summary, type: object, expression: "{exit: steps.report.outputs.exitCode, said: steps.report.outputs.stdout}"}
"""


class TestArtifacts:
    async def test_file_and_object_outputs(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        client = dev_env.client
        tq = unique("tq")
        async with worker_for(client, tmp_path, tq):
            handle = await start_pack(client, tq, OUTPUTS, tenant="acme")
            result = await result_of(handle)
            assert result.status == "succeeded"
            records = await handle.query(QUERY_ARTIFACTS, result_type=list[ArtifactRecord])
            by_name = {r.name: r for r in records}
            report = by_name["report"]
            assert report.status == "captured" and report.storedPath is not None
            assert report.storedPath.endswith("artifacts/report")
            assert json.loads((tmp_path / report.storedPath).read_text()) == {"ok": True}
            assert by_name["missing"].status == "failed" and by_name["missing"].notes
            assert json.loads(by_name["summary"].expressionJson or "") == {
                "exit": 0,
                "said": "done\n",
            }
            assert result.outputs["summary"]["exit"] == 0


LONG = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: long, version: 1.0.0}
spec:
  approvals: [{id: mid}]
  steps:
STEPS
"""


class TestContinueAsNew:
    async def test_carries_state_and_logs(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        steps = "\n".join(
            f'    - {{id: s{i}, run: {{uses: "builtin:echo", with: {{i: {i}}}}}}}'
            for i in range(12)
        )
        steps += "\n    - {id: gate, gate: {approval: {id: mid}}}"
        steps += '\n    - {id: tail, run: {uses: "builtin:echo", with: {first: "{{ steps.s0.outputs.i }}"}}}'
        client = dev_env.client
        tq = unique("tq")
        async with worker_for(client, tmp_path, tq):
            handle = await start_pack(
                client, tq, LONG.replace("STEPS", steps), continueAsNewAfterEvents=40
            )
            state = await wait_for(handle, lambda s: s.status == "awaiting-approval")
            latest = client.get_workflow_handle(handle.id)
            await latest.execute_update(
                UPDATE_DECIDE_APPROVAL,
                ApprovalSignal(
                    approvalId="mid", decision="approved", planHash=state.planHash, actorId="a"
                ),
                result_type=ApprovalOutcome,
            )
            await latest.result()
            final = await state_of(latest)
            assert final.status == "succeeded"
            assert steps_by_id(final)["tail"].outputs == {"first": 0}
            # Entries before a continue-as-new are paged out of the workflow: read them as the API does.
            logs = await whole_log(client, tmp_path, handle.id.split("/")[-1])
            assert "run.continued" in [e.eventType for e in logs]
            assert [e.sequence for e in logs] == list(range(1, len(logs) + 1))
            assert logs[0].eventType == "run.created"
            runs = [r async for r in client.list_workflows(f"WorkflowId = '{handle.id}'")]
            assert len(runs) >= 2
