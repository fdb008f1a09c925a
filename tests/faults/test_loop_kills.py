"""A worker SIGKILLed twice while a long loop continues as new inside itself: the run completes,
no iteration's step that had succeeded runs again (in whichever history it ran), and the state
and log come back whole.

As in test_worker_kills: a step cut off mid-way may run again; a step whose success was
recorded never does. The loop continues as new every few iterations, so the kills land in
histories that were handed a loop under way."""

from __future__ import annotations

import asyncio
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from tests.faults.support import WORKER, assert_gap_free, group, trail, worker_env
from tests.helpers import result_of, start_pack, state_of, unique, whole_log

ITERATIONS = 30
KILLS = 2

PACK = f"""
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {{name: loop-kill-target, version: 1.0.0}}
spec:
  steps:
    - id: each
      loop:
        items: {{range: {{start: 0, end: {ITERATIONS}, step: 1}}}}
        steps:
          - {{id: mark, run: {{uses: "builtin:shell", with: {{command: "echo m{{{{ item }}}} >> trail.txt"}}}}}}
          - {{id: nap, run: {{uses: "builtin:sleep", with: {{seconds: 0.2}}}}}}
    - {{id: tail, run: {{uses: "builtin:noop"}}}}
"""


class TestWorkerKilledInsideALongLoop:
    async def test_the_loop_completes_and_no_succeeded_step_runs_again(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        client = dev_env.client
        tq = unique("tq")
        env = worker_env(client.service_client.config.target_host, tq, tmp_path)
        noted: dict[str, int] = {}
        with group(WORKER, env, tmp_path / "worker.log") as worker:
            handle = await start_pack(
                client, tq, PACK, continueAsNewAfterEvents=40, heartbeatTimeoutSeconds=2
            )
            run_id = handle.id.split("/")[-1]
            latest = client.get_workflow_handle(handle.id)
            for _ in range(KILLS):
                before = len(noted)
                deadline = asyncio.get_running_loop().time() + 60
                # Until more steps have succeeded than at the last kill (however slowly a
                # loaded machine starts the worker), noting how often each ran by then.
                while len(noted) < before + 4:
                    assert asyncio.get_running_loop().time() < deadline, "no progress for 60 s"
                    await asyncio.sleep(0.3)
                    state = await state_of(latest)
                    lines = trail(tmp_path, "default", run_id)
                    for step in state.steps:
                        if step.stepId.endswith("::mark") and step.status == "Succeeded":
                            mark = "m" + step.stepId.split("[")[1].split("]")[0]
                            noted.setdefault(mark, lines.count(mark))
                worker.kill()
                worker.start()
            result = await asyncio.wait_for(result_of(handle), timeout=120)
            state = await state_of(latest)
            entries = await whole_log(client, tmp_path, run_id)
            histories = [e async for e in client.list_workflows(f"WorkflowId = '{handle.id}'")]

        assert result.status == "succeeded", result.error
        assert len(histories) >= 3, len(histories)
        assert 0 < len(noted) < ITERATIONS, noted  # the kills landed mid-loop
        lines = trail(tmp_path, "default", run_id)
        for i in range(ITERATIONS):
            assert lines.count(f"m{i}") >= 1, (i, lines)
        for mark, runs_by_then in noted.items():
            assert lines.count(mark) == runs_by_then, (mark, runs_by_then, lines)
        assert all(s.status == "Succeeded" for s in state.steps), state.steps
        assert len(state.steps) == 2 + 2 * ITERATIONS
        assert_gap_free(entries)
        completed = [e.stepId for e in entries if e.eventType == "step.completed"]
        assert len(completed) == len(set(completed)) == len(state.steps)
