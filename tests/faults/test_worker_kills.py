"""A worker SIGKILLed three times while 20 runs are under way: every run completes, no step that
had succeeded runs again, and every run's log is gap-free.

A step cut off mid-way may run again (at least once is what a lost worker gives); what must never
happen is a step running again after its success was recorded. So at each kill the test notes,
for every step the run reports Succeeded, how many times its trail shows it ran by then, and at
the end that count must not have grown."""

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


async def note_succeeded(
    handles: list[WorkflowHandle[Any, Any]], data_dir: Path, noted: list[dict[str, int]]
) -> None:
    """For each run's shell steps whose success the workflow has recorded (history holds it) and
    that were not noted before: how many times the trail shows them run so far."""
    states = await asyncio.gather(*(state_of(h) for h in handles))
    # The trail is read after the state: a step that succeeds in between has its line in it.
    for state, seen in zip(states, noted, strict=True):
        lines = trail(data_dir, "default", state.runId)
        for step in state.steps:
            if step.stepId in SHELL_STEPS and step.status == "Succeeded":
                seen.setdefault(step.stepId, lines.count(step.stepId))


async def progress(
    handles: list[WorkflowHandle[Any, Any]], data_dir: Path, noted: list[dict[str, int]]
) -> None:
    """Wait until a step succeeds that had not at the last look: a kill then lands mid-run
    however slowly a loaded machine starts the worker (a fixed pause could kill it before any
    step ran, or after every one had)."""
    before = sum(len(seen) for seen in noted)
    deadline = asyncio.get_running_loop().time() + 60
    await asyncio.sleep(1.0)
    while True:
        await note_succeeded(handles, data_dir, noted)
        if sum(len(seen) for seen in noted) > before:
            return
        assert asyncio.get_running_loop().time() < deadline, "no step succeeded for 60 s"
        await asyncio.sleep(0.3)


class TestWorkerKilledRepeatedly:
    async def test_runs_complete_and_succeeded_steps_never_rerun(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        tq = unique("tq")
        address = dev_env.client.service_client.config.target_host
        env = worker_env(address, tq, tmp_path)
        noted: list[dict[str, int]] = [{} for _ in range(RUNS)]
        at_first_kill = 0
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
                await progress(handles, tmp_path, noted)
                if kill == 0:
                    at_first_kill = sum(len(seen) for seen in noted)
                worker.kill()
                worker.start()
            results = await asyncio.wait_for(
                asyncio.gather(*(h.result() for h in handles)), timeout=120
            )
            views = [await final_view(h) for h in handles]

        assert [r.status for r in results] == ["succeeded"] * RUNS
        # The kills landed mid-run: some steps had succeeded before one, and not all of them.
        # The first kill landed mid-run: some steps had succeeded by then, not all of them.
        assert 0 < at_first_kill < RUNS * len(SHELL_STEPS), at_first_kill
        for handle, (state, logs), seen in zip(handles, views, noted, strict=True):
            run_id = state.runId
            lines = trail(tmp_path, "default", run_id)
            for step in SHELL_STEPS:
                assert lines.count(step) >= 1, (run_id, step, lines)
            for step, runs_by_then in seen.items():
                # Succeeded before a kill: never run again after it.
                assert lines.count(step) == runs_by_then, (run_id, step, runs_by_then, lines)
            assert all(s.status == "Succeeded" for s in state.steps), state.steps
            assert_gap_free(logs)
            completed = [e.stepId for e in logs if e.eventType == "step.completed"]
            assert len(completed) == len(set(completed)), (handle.id, completed)
