"""A redrive on a real Temporal server: the steps the API decided to reuse (api/redrive.py) show
`Succeeded` with reason `reused`, keep their outputs and never run; a map at the restart point
runs again only the items that did not succeed."""

from __future__ import annotations

from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from api.redrive import decide
from compiler import compile_manifest
from tests.helpers import run_to_end, steps_by_id

PACK = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: redrive-map, version: 1.0.0}
spec:
  inputs:
    - {name: bad, type: integer, default: 1}
  steps:
    - {id: first, run: {uses: "builtin:echo", with: {made: "by the first run"}}}
    - id: each
      map:
        items: "{{ `[0, 1, 2]` }}"
        maxParallel: 1
        continueOnError: true
        step:
          id: one
          run:
            uses: "builtin:shell"
            with: {command: "test {{ item }} -ne {{ inputs.bad }}"}
    - {id: last, run: {uses: "builtin:echo", with: {seen: "{{ steps.first.outputs.made }}"}}}
"""


async def test_reused_steps_keep_outputs_and_do_not_run(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    result, old, _ = await run_to_end(dev_env.client, tmp_path, PACK)
    before = steps_by_id(old)
    assert [before[f"each[{i}]::one"].status for i in range(3)] == [
        "Succeeded",
        "Failed",
        "Succeeded",
    ]

    compiled = compile_manifest(PACK, {"bad": 99})
    # The run went on past the map (continueOnError), so name the restart point.
    decision = decide(
        old.model_copy(update={"status": "failed"}), compiled.plan, compiled.plan_hash, "each"
    )
    assert decision.reused == ["first", "each[0]::one", "each[2]::one"]

    result, new, logs = await run_to_end(
        dev_env.client, tmp_path, PACK, {"bad": 99}, redrive=decision.redrive
    )
    assert result.status == "succeeded", new.error
    by_id = steps_by_id(new)
    assert (by_id["first"].status, by_id["first"].statusReason) == ("Succeeded", "reused")
    assert by_id["first"].outputs == {"made": "by the first run"}
    assert by_id["last"].outputs == {"seen": "by the first run"}
    assert [by_id[f"each[{i}]::one"].statusReason for i in range(3)] == ["reused", None, "reused"]
    assert new.redriveOf == old.runId
    # Only the failed item ran again.
    started = {e.stepId for e in logs if e.eventType == "step.started"}
    assert "each[1]::one" in started
    assert not started & {"first", "each[0]::one", "each[2]::one"}
