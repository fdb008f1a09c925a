"""History events per step: what a run of each kind of step writes to Temporal's history, against
the hand-written baseline (`BaselineSteps`: one activity per step, nothing else).

Every event is stored, replayed on a cache miss and counted against Temporal's history limits, so
events per step is the interpreter's cost in history. Counted over the run's own history and
every child workflow it started (map chunks).

Run on its own: `python -m bench.history_bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import uuid
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from activities.artifacts import ArtifactStore
from activities.registry import Registry
from activities.step_activities import StepActivities
from bench.baseline import BaselineSteps
from bench.workflow_bench import Figure, noop_pack, print_table, start_dev_server, start_run
from workflows.contract.names import QUERY_STATE, SIGNAL_APPROVAL
from workflows.contract.state import ApprovalSignal, RunStateSnapshot, StateQuery
from workflows.settings import WorkerSettings
from workflows.worker import build_worker

STEPS = 10
MAP_ITEMS = 100

PARALLEL_PACK = (
    "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\n"
    "metadata: {name: par, version: 1.0.0}\nspec:\n  steps:\n"
    "    - id: block\n      parallel:\n        steps:\n"
    + "".join(f'          - {{id: p{i}, run: {{uses: "builtin:noop"}}}}\n' for i in range(STEPS))
)
MAP_PACK = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: map100, version: 1.0.0}
spec:
  inputs: [{name: items, type: array}]
  steps:
    - id: fan
      map: {items: "inputs.items", maxParallel: 20, step: {id: one, run: {uses: "builtin:noop"}}}
"""
GATE_PACK = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: gate, version: 1.0.0}
spec:
  approvals: [{id: go}]
  steps:
    - {id: gate, gate: {approval: {id: go}}}
"""


async def events_of(client: Client, handle: Any) -> tuple[int, int]:
    """(events in the run's history and its children's, workflows counted)."""
    total = len((await handle.fetch_history()).events)
    workflows = 1
    async for child in client.list_workflows(f"WorkflowId STARTS_WITH '{handle.id}/'"):
        history = await client.get_workflow_handle(child.id, run_id=child.run_id).fetch_history()
        total += len(history.events)
        workflows += 1
    return total, workflows


async def gate_run(client: Client, task_queue: str) -> Any:
    handle = await start_run(client, task_queue, GATE_PACK)
    while True:
        state = await handle.query(
            QUERY_STATE, StateQuery(stepsLimit=1), result_type=RunStateSnapshot
        )
        if state.status == "awaiting-approval":
            break
        await asyncio.sleep(0.05)
    await handle.signal(
        SIGNAL_APPROVAL,
        ApprovalSignal(
            approvalId="go", decision="approved", planHash=state.planHash, actorId="user:bench"
        ),
    )
    return handle


async def measure(client: Client) -> list[Figure]:
    data_dir = Path(tempfile.mkdtemp(prefix="bench-history-"))
    tq = f"bench-history-{uuid.uuid4().hex[:6]}"
    baseline_tq = f"{tq}-baseline"
    baseline = Worker(
        client,
        task_queue=baseline_tq,
        workflows=[BaselineSteps],
        activities=StepActivities(Registry(), ArtifactStore(data_dir)).activities(),
    )
    async with build_worker(client, WorkerSettings(data_dir=data_dir), task_queue=tq), baseline:
        handle = await client.start_workflow(
            BaselineSteps.run, STEPS, id=f"baseline-{uuid.uuid4().hex}", task_queue=baseline_tq
        )
        await handle.result()
        base_events, _ = await events_of(client, handle)
        per_base = base_events / STEPS
        figures = [
            Figure(
                "history events per step, hand-written",
                per_base,
                "events",
                f"{base_events} events for {STEPS} activities in sequence",
            )
        ]
        cases = [
            ("sequence", STEPS, start_run(client, tq, noop_pack(STEPS))),
            ("parallel block", STEPS, start_run(client, tq, PARALLEL_PACK)),
            (
                f"map of {MAP_ITEMS}",
                MAP_ITEMS,
                start_run(client, tq, MAP_PACK, {"items": list(range(MAP_ITEMS))}),
            ),
            ("gate", 1, gate_run(client, tq)),
        ]
        for name, steps, starting in cases:
            run = await starting
            result = await run.result()
            assert result.status == "succeeded", (name, result)
            events, workflows = await events_of(client, run)
            per = events / steps
            figures.append(
                Figure(
                    f"history events per step, {name}",
                    per,
                    "events",
                    f"{per / per_base:.2f}x hand-written; {events} events, {steps} steps, "
                    f"{workflows} workflow(s)",
                )
            )
    return figures


async def main_async() -> list[Figure]:
    env = await start_dev_server()
    try:
        return await measure(env.client)
    finally:
        await env.shutdown()


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    print_table(asyncio.run(main_async()))


if __name__ == "__main__":
    main()
