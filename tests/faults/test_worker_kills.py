"""A worker SIGKILLed three times while 20 runs are under way: every run completes, no step that
had succeeded runs again, and every run's log is gap-free."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from tests.faults.support import WORKER, assert_gap_free, final_view, group, trail, worker_env
from tests.helpers import start_pack, state_of, unique

RUNS = 20
KILLS = 3
SHELL_STEPS = ("a", "b", "c", "d", "e")

# Shell steps append their id to trail.txt in the run's workspace; sleeps keep the runs busy
# long enough for three kills to land mid-run.
PACK = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: kill-target, version: 1.0.0}
spec:
  steps:
    - {id: a, run: {uses: "builtin:shell", with: {command: "echo a >> trail.txt"}}}
    - {id: nap1, run: {uses: "builtin:sleep", with: {seconds: 1}}}
    - id: fan
      parallel:
        steps:
          - {id: b, run: {uses: "builtin:shell", with: {command: "echo b >> trail.txt"}}}
          - {id: c, run: {uses: "builtin:shell", with: {command: "sleep 1; echo c >> trail.txt"}}}
    - {id: nap2, run: {uses: "builtin:sleep", with: {seconds: 1.5}}}
    - {id: d, run: {uses: "builtin:shell", with: {command: "echo d >> trail.txt"}}}
    - {id: nap3, run: {uses: "builtin:sleep", with: {seconds: 1}}}
    - {id: e, run: {uses: "builtin:shell", with: {command: "echo e >> trail.txt"}}}
"""


async def succeeded_shell_steps(handles: list[WorkflowHandle[Any, Any]]) -> list[set[str]]:
    """Per run, the shell steps whose success the workflow has recorded (so history holds it)."""
    states = await asyncio.gather(*(state_of(h) for h in handles))
    return [
        {s.stepId for s in state.steps if s.stepId in SHELL_STEPS and s.status == "Succeeded"}
        for state in states
    ]


class TestWorkerKilledRepeatedly:
    async def test_runs_complete_and_succeeded_steps_never_rerun(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        tq = unique("tq")
        address = dev_env.client.service_client.config.target_host
        env = worker_env(address, tq, tmp_path)
        done_before_a_kill: list[set[str]] = [set() for _ in range(RUNS)]
        with group(WORKER, env, tmp_path / "worker.log") as worker:
            handles = list(
                await asyncio.gather(
                    *(
                        start_pack(dev_env.client, tq, PACK, heartbeatTimeoutSeconds=2)
                        for _ in range(RUNS)
                    )
                )
            )
            for kill in range(KILLS):
                # Let the (new) worker make progress, then note what has succeeded and kill it.
                await asyncio.sleep(2.5 if kill == 0 else 3.5)
                for seen, now in zip(
                    done_before_a_kill, await succeeded_shell_steps(handles), strict=True
                ):
                    seen |= now
                worker.kill()
                worker.start()
            results = await asyncio.wait_for(
                asyncio.gather(*(h.result() for h in handles)), timeout=120
            )
            views = [await final_view(h) for h in handles]

        assert [r.status for r in results] == ["succeeded"] * RUNS
        # The kills landed mid-run: some steps had succeeded before one, and not all of them.
        noted = sum(len(s) for s in done_before_a_kill)
        assert 0 < noted < RUNS * len(SHELL_STEPS), noted
        for handle, (state, logs), seen in zip(handles, views, done_before_a_kill, strict=True):
            run_id = state.runId
            lines = trail(tmp_path, "default", run_id)
            for step in SHELL_STEPS:
                assert lines.count(step) >= 1, (run_id, step, lines)
            for step in seen:
                assert lines.count(step) == 1, (run_id, step, lines)  # succeeded: never again
            assert all(s.status == "Succeeded" for s in state.steps), state.steps
            assert_gap_free(logs)
            completed = [e.stepId for e in logs if e.eventType == "step.completed"]
            assert len(completed) == len(set(completed)), (handle.id, completed)
