"""Durability: a worker killed mid-step, a recorded history replayed, and a very large map."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from tests.helpers import logs_of, result_of, start_pack, state_of, steps_by_id, unique, wait_for

KILLABLE = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: durable, version: 1.0.0}
spec:
  steps:
    - {id: a, run: {uses: "builtin:shell", with: {command: "echo a >> trail.txt"}}}
    - {id: b, run: {uses: "builtin:shell", with: {command: "echo b-start >> trail.txt; sleep 4; echo b-end >> trail.txt"}}}
    - {id: c, run: {uses: "builtin:shell", with: {command: "echo c >> trail.txt"}}}
"""


@contextmanager
def worker_process(
    env: WorkflowEnvironment, task_queue: str, data_dir: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A worker in its own process (and process group), as a deployment runs it."""
    environ = {
        **os.environ,
        "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "TASKRUNNER_TASK_QUEUE": task_queue,
        "TASKRUNNER_DATA_DIR": str(data_dir),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "workflows.worker"],
        env=environ,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)


class TestWorkerKilled:
    async def test_run_completes_and_no_succeeded_step_runs_twice(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        tq = unique("tq")
        with worker_process(dev_env, tq, tmp_path) as first:
            handle = await start_pack(dev_env.client, tq, KILLABLE, heartbeatTimeoutSeconds=2)
            await wait_for(handle, lambda s: steps_by_id(s)["b"].status == "Running")
            trail = next(tmp_path.rglob("trail.txt"))
            for _ in range(100):
                if "b-start" in trail.read_text():
                    break
                await asyncio.sleep(0.05)
            # SIGKILL the whole group: the worker and the shell it was running die mid-step.
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=10)
        with worker_process(dev_env, tq, tmp_path):
            result = await asyncio.wait_for(result_of(handle), timeout=60)
            state = await state_of(handle)
            logs = await logs_of(handle)
        assert result.status == "succeeded"
        assert [s.status for s in state.steps] == ["Succeeded"] * 3
        lines = trail.read_text().split()
        assert lines.count("a") == 1, lines  # succeeded before the kill: never again
        assert lines.count("b-start") == 2, lines  # cut off mid-way: ran again on the new worker
        assert lines.count("b-end") == 1 and lines.count("c") == 1, lines
        assert [e.sequence for e in logs] == list(range(1, len(logs) + 1))


BIG_MAP = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: big, version: 1.0.0}
spec:
  inputs: [{name: items, type: array}]
  steps:
    - id: fan
      map: {items: "inputs.items", maxParallel: 100, step: {id: one, run: {uses: "builtin:noop"}}}
    - {id: count, run: {uses: "builtin:echo", with: {n: "{{ length(steps.fan.outputs.results) }}"}}}
"""


class TestLargeMap:
    async def test_5000_items_stay_far_below_history_limits(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        from tests.helpers import worker_for

        client = dev_env.client
        tq = unique("tq")
        async with worker_for(client, tmp_path, tq):
            handle = await start_pack(client, tq, BIG_MAP, {"items": list(range(5000))})
            result = await asyncio.wait_for(result_of(handle), timeout=240)
            assert result.status == "succeeded"
            state = await state_of(handle)
            steps = steps_by_id(state)
            assert steps["count"].outputs == {"n": 5000}
            assert steps["fan[4999]::one"].status == "Succeeded"
            assert sum(1 for s in state.steps if s.status == "Succeeded") == 5002
            parent = await handle.fetch_history()
            lengths = [len(parent.events)]
            # Chunks get no copy of the items input and hand back succeeded items by id: the
            # run's own history stays far below Temporal's limits (each chunk added ~150 KB before).
            assert sum(e.ByteSize() for e in parent.events) < 600_000
            async for chunk in client.list_workflows(f"WorkflowId STARTS_WITH '{handle.id}/'"):
                history = await client.get_workflow_handle(
                    chunk.id, run_id=chunk.run_id
                ).fetch_history()
                lengths.append(len(history.events))
            assert len(lengths) == 1 + 10  # the parent and ten chunks of 500
            print(f"largest history: {max(lengths)} events over {len(lengths)} workflows")
            assert max(lengths) < 10_000


CHUNKING = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: chunking, version: 1.0.0}
spec:
  inputs: [{name: many, type: array}, {name: some, type: array}]
  approvals: [{id: ok}]
  policies: [{id: pass, condition: true}]
  steps:
    - id: plain
      map: {items: "inputs.many", maxParallel: 200, step: {id: one, run: {uses: "builtin:noop"}}}
    - id: warned
      map:
        items: "inputs.some"
        maxParallel: 200
        step: {id: w, gate: {policy: {policy: pass, failureAction: warn}}}
    - id: overridable
      map:
        items: "inputs.some"
        maxParallel: 200
        step: {id: o, gate: {policy: {policy: pass, failureAction: requestOverride, approvalId: ok}}}
"""


async def test_the_workflow_chunks_maps_by_the_compilers_rule(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """The estimate and the run share one rule: which maps fan out, and into how many chunks."""
    from compiler import compile_manifest, plan
    from compiler.history import MAP_CHUNK_SIZE, MAP_INLINE_LIMIT, map_chunks, map_runs_in_chunks
    from tests.helpers import worker_for

    inputs = {"many": list(range(MAP_CHUNK_SIZE + 1)), "some": list(range(MAP_INLINE_LIMIT + 1))}
    compiled = compile_manifest(CHUNKING, inputs)
    sizes = {"plain": len(inputs["many"]), "warned": len(inputs["some"])}
    sizes["overridable"] = sizes["warned"]
    expected = {}
    for step in compiled.plan.steps:
        assert isinstance(step, plan.MapStep)
        items = range(sizes[step.id])
        expected[step.id] = len(map_chunks(items)) if map_runs_in_chunks(step, len(items)) else 0
    # The rule as the compiler states it: a gate-free map this large fans out (in two chunks
    # past MAP_CHUNK_SIZE); one whose template may wait for people stays in the run's history.
    assert expected == {"plain": 2, "warned": 1, "overridable": 0}

    client = dev_env.client
    tq = unique("tq")
    async with worker_for(client, tmp_path, tq):
        handle = await start_pack(client, tq, CHUNKING, inputs)
        result = await asyncio.wait_for(result_of(handle), timeout=240)
        assert result.status == "succeeded"
        started = {}
        for map_id in expected:
            query = f"WorkflowId STARTS_WITH '{handle.id}/{map_id}/'"
            started[map_id] = len([c async for c in client.list_workflows(query)])
        assert started == expected
        steps = steps_by_id(await state_of(handle))
        templates = {"plain": "one", "warned": "w", "overridable": "o"}
        assert all(
            steps[f"{m}[{sizes[m] - 1}]::{t}"].status == "Succeeded" for m, t in templates.items()
        )
