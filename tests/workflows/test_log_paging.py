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
