"""Long runs page their log out of the workflow: entries past `logsKeptInRun` move to the artifact
store at a step boundary (and all of them before continuing as new), the state carried across
continue-as-new stays bounded however long the log, and the API serves the whole log back in
order, gap-free, its hash chain unbroken."""

from __future__ import annotations

from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from api.gateway import LOGS_PAGE, RunGateway
from api.metrics import Metrics
from api.settings import ApiSettings
from tests.helpers import result_of, start_pack, unique, whole_log, worker_for
from workflows.contract.log_chain import chain_head
from workflows.contract.state import PackRunInput

STEPS = 40
KEPT = 10


def noop_pack(steps: int) -> str:
    body = "".join(f'    - {{id: s{i}, run: {{uses: "builtin:noop"}}}}\n' for i in range(steps))
    return (
        "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\n"
        "metadata: {name: long, version: 1.0.0}\nspec:\n  steps:\n" + body
    )


class TestLogPaging:
    async def test_the_whole_log_comes_back_while_carried_state_stays_bounded(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        client = dev_env.client
        tq = unique("tq")
        async with worker_for(client, tmp_path, tq):
            handle = await start_pack(
                client, tq, noop_pack(STEPS), logsKeptInRun=KEPT, continueAsNewAfterEvents=80
            )
            result = await result_of(handle)
            assert result.status == "succeeded"
            gateway = RunGateway(
                client,
                ApiSettings(
                    temporal_address=client.service_client.config.target_host, data_dir=tmp_path
                ),
                Metrics(),
            )
            run_id = handle.id.split("/")[-1]
            entries = await whole_log(client, tmp_path, run_id)
            first_page = await gateway.logs("default", run_id, 0)

        sequences = [e.sequence for e in entries]
        assert sequences == list(range(1, len(entries) + 1))
        events = [e.eventType for e in entries]
        assert events[0] == "run.created" and events[-1] == "run.completed"
        assert events.count("step.completed") == STEPS
        assert "run.continued" in events
        # The chain runs through the paged-out entries and the kept ones alike.
        chain_head(e.model_dump(mode="json") for e in entries)
        assert len(first_page.entries) == min(LOGS_PAGE, len(entries))

        # Some of it was paged out, and no continued run was handed more than it keeps.
        stored = sorted((tmp_path / "runs" / "default" / run_id / "logs").glob("*.ndjson"))
        assert stored, "nothing was paged out"
        carried_logs = []
        async for execution in client.list_workflows(f"WorkflowId = '{handle.id}'"):
            history = await client.get_workflow_handle(
                handle.id, run_id=execution.run_id
            ).fetch_history()
            started = history.events[0].workflow_execution_started_event_attributes
            (run_input,) = await client.data_converter.decode(
                started.input.payloads, [PackRunInput]
            )
            if run_input.carried is not None:
                carried_logs.append(len(run_input.carried.logs))
        assert carried_logs, "the run never continued as new"
        assert max(carried_logs) <= KEPT, carried_logs


NESTED = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: nested, version: 1.0.0}
spec:
  steps:
    - id: each
      loop:
        items: {range: {start: 0, end: 30, step: 1}}
        steps:
          - {id: a, run: {uses: "builtin:echo", with: {i: "{{ item }}"}}}
          - {id: b, run: {uses: "builtin:noop"}}
    - id: both
      parallel:
        steps:
          - id: left
            loop:
              items: {range: {start: 0, end: 15, step: 1}}
              steps: [{id: l, run: {uses: "builtin:noop"}}]
          - id: right
            loop:
              items: {range: {start: 0, end: 15, step: 1}}
              steps: [{id: r, run: {uses: "builtin:noop"}}]
    - {id: tail, run: {uses: "builtin:noop"}}
"""


class TestLogPagingInsideSteps:
    async def test_a_long_loop_pages_its_log_out_between_its_own_steps(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        """A loop (alone, and two side by side in a parallel block) is one top-level step: its
        entries are paged out between the steps inside it, so the workflow never holds much more
        than `logsKeptInRun` however many iterations, and the log still comes back whole."""
        client = dev_env.client
        tq = unique("tq")
        async with worker_for(client, tmp_path, tq):
            handle = await start_pack(
                client, tq, NESTED, logsKeptInRun=KEPT, continueAsNewAfterEvents=200
            )
            result = await handle.result()
            assert result.status == "succeeded", result.error
            run_id = handle.id.split("/")[-1]
            entries = await whole_log(client, tmp_path, run_id)

        assert [e.sequence for e in entries] == list(range(1, len(entries) + 1))
        chain_head(e.model_dump(mode="json") for e in entries)
        completed = [e.stepId for e in entries if e.eventType == "step.completed"]
        assert completed[:2] == ["each[0]::a", "each[0]::b"]
        assert sum(1 for s in completed if s and s.startswith("each[")) == 30 * 2
        assert completed[-1] == "tail"

        # Each segment is what the workflow held when it paged out: never much past the bound,
        # and pages were cut inside the loop and inside the parallel block, not only after them.
        by_sequence = {e.sequence: e for e in entries}
        # Named <first>-<last>.ndjson: sorted by name, they are in order.
        segments = sorted((tmp_path / "runs" / "default" / run_id / "logs").glob("*.ndjson"))
        sizes = [len(path.read_text().splitlines()) for path in segments]
        assert sizes and max(sizes) <= KEPT + 4, sizes
        last_steps = [by_sequence[int(path.stem.split("-")[1])].stepId or "" for path in segments]
        assert any(s.startswith("each[") and s != "each" for s in last_steps), last_steps
        assert any(s.startswith(("left[", "right[")) for s in last_steps), last_steps

        # Whatever continued as new was handed no more than the bound either.
        carried = []
        async for execution in client.list_workflows(f"WorkflowId = '{handle.id}'"):
            history = await client.get_workflow_handle(
                handle.id, run_id=execution.run_id
            ).fetch_history()
            started = history.events[0].workflow_execution_started_event_attributes
            (run_input,) = await client.data_converter.decode(
                started.input.payloads, [PackRunInput]
            )
            if run_input.carried is not None:
                carried.append(len(run_input.carried.logs))
        assert all(n <= KEPT for n in carried), carried
