"""How long a loop can run: one top-level loop of N iterations of S `builtin:echo` steps, which
continues as new inside itself whenever Temporal suggests it. Prints every history's events and
bytes, the largest carried state, how many step states were paged out, and checks through the
API's gateway that the run shows every iteration's steps (read back from the artifact store).

Not part of `make bench` (5,000 iterations take minutes on a small machine); run it on its own:
`python -m bench.loop_scale --iterations 5000 --steps 2`. `--every-events E` continues as new
every E events instead of waiting for Temporal's suggestion (the `continueAsNewAfterEvents`
test knob), to see many more histories in a short run.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

from temporalio.client import Client

from api.gateway import RunGateway
from api.metrics import Metrics
from api.settings import ApiSettings
from bench.workflow_bench import start_dev_server
from compiler import compile_manifest
from workflows.contract.names import WORKFLOW_TYPE, workflow_id
from workflows.contract.state import PackRunInput, RunMeta, RunResult
from workflows.settings import WorkerSettings
from workflows.worker import build_worker


def loop_pack(iterations: int, steps: int) -> str:
    body = "".join(
        f'          - {{id: s{i}, run: {{uses: "builtin:echo", with: {{i: "{{{{ item }}}}"}}}}}}\n'
        for i in range(steps)
    )
    return (
        "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\n"
        "metadata: {name: loop-scale, version: 1.0.0}\nspec:\n  steps:\n"
        "    - id: each\n      loop:\n"
        f"        items: {{range: {{end: {iterations}}}}}\n"
        "        maxIterations: 10000\n        aggregation: last\n        steps:\n"
        + body
        + '    - {id: tail, run: {uses: "builtin:echo", '
        + 'with: {last: "{{ steps.each.outputs.i }}"}}}\n'
    )


async def histories(client: Client, wf_id: str) -> list[tuple[int, int, int]]:
    """(events, bytes, carried bytes) of each history of the run."""
    found = []
    async for execution in client.list_workflows(f"WorkflowId = '{wf_id}'"):
        history = await client.get_workflow_handle(wf_id, run_id=execution.run_id).fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        carried = sum(len(p.data) for p in started.input.payloads)
        size = sum(event.ByteSize() for event in history.events)
        found.append((len(history.events), size, carried))
    return found


async def measure(iterations: int, steps: int, every: int | None) -> None:
    env = await start_dev_server()
    data_dir = Path(tempfile.mkdtemp(prefix="loop-scale-"))
    try:
        client = env.client
        tq = f"loop-{uuid.uuid4().hex[:6]}"
        compiled = compile_manifest(loop_pack(iterations, steps))
        run_id = f"loop-{uuid.uuid4().hex[:8]}"
        wf_id = workflow_id("bench", run_id)
        meta = RunMeta(
            runId=run_id,
            tenant="bench",
            requestedAt="2026-01-01T00:00:00Z",
            continueAsNewAfterEvents=every,
        )
        async with build_worker(client, WorkerSettings(data_dir=data_dir), task_queue=tq):
            started = time.perf_counter()
            handle = await client.start_workflow(
                WORKFLOW_TYPE,
                PackRunInput(plan=compiled.plan, planHash=compiled.plan_hash, meta=meta),
                id=wf_id,
                task_queue=tq,
                result_type=RunResult,
            )
            result = await client.get_workflow_handle(wf_id, result_type=RunResult).result()
            elapsed = time.perf_counter() - started
            settings = ApiSettings(
                temporal_address=client.service_client.config.target_host, data_dir=data_dir
            )
            state = await RunGateway(client, settings, Metrics()).full_state("bench", run_id)
        sizes = await histories(client, handle.id)
        paged = sum(1 for _ in (data_dir / "runs" / "bench" / run_id / "steps").glob("*.ndjson"))
        expected = 2 + iterations * steps
        print(
            f"loop of {iterations} iterations x {steps} steps: {result.status} in {elapsed:.0f} s"
        )
        print(f"  histories: {len(sizes)}")
        print(f"  largest history: {max(s[0] for s in sizes)} events, {max(s[1] for s in sizes)} B")
        print(f"  largest carried input: {max(s[2] for s in sizes)} B")
        print(f"  step segments in the artifact store: {paged}")
        shown = sum(1 for s in state.steps if s.status == "Succeeded")
        print(
            f"  API shows {len(state.steps)} of {state.totalSteps} steps ({expected} expected), "
            f"{shown} Succeeded"
        )
    finally:
        await env.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--every-events", type=int, default=None)
    args = parser.parse_args(argv)
    asyncio.run(measure(args.iterations, args.steps, args.every_events))


if __name__ == "__main__":
    main()
