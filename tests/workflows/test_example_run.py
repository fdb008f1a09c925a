"""Examples run end to end: examples/run.yaml's report is valid JSON whatever the name holds, and
examples/gate-policy.yaml's gates go the way `simulate` says they will."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from compiler import compile_manifest
from compiler.simulation import SimulationStep, simulate
from tests.helpers import EXAMPLES, run_to_end


async def test_report_is_valid_json(dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
    name = 'Ada "the Countess" \\ Lovelace'
    manifest = (EXAMPLES / "run.yaml").read_text()
    result, _, _ = await run_to_end(dev_env.client, tmp_path, manifest, {"name": name})
    assert result.status == "succeeded", result
    reports = [p for p in tmp_path.rglob("report.json") if p.is_file()]
    assert reports, list(tmp_path.rglob("*"))
    for report in reports:
        assert json.loads(report.read_text()) == {
            "greeting": f"HELLO, {name.upper()}!\n",
            "times": 2,
        }


# What a simulated policy verdict becomes in the run, by failureAction: (status, reason).
RUN_OF_VERDICT = {
    ("policy-passes", "abort"): ("Succeeded", None),
    ("policy-passes", "warn"): ("Succeeded", None),
    ("policy-passes", "requestOverride"): ("Succeeded", None),
    ("policy-passes", "branch"): ("Succeeded", None),
    ("policy-fails", "abort"): ("Failed", "policy-failed"),
    ("policy-fails", "warn"): ("Succeeded", "policy-warned"),
    ("policy-fails", "branch"): ("Succeeded", "policy-branch"),
}


def flat_simulation(steps: list[SimulationStep]) -> list[SimulationStep]:
    return [s for step in steps for s in (step, *flat_simulation(step["children"]))]


@pytest.mark.parametrize(
    ("pack", "inputs"),
    [
        ("gate-policy.yaml", {"criticalFindings": 0}),
        ("gate-policy.yaml", {"criticalFindings": 2}),
        # An abort known to fail: the run fails there and skips the rest.
        ("gate-policy.yaml", {"criticalFindings": 7, "abort": True}),
    ],
)
async def test_policy_gates_go_the_way_simulate_said(
    dev_env: WorkflowEnvironment, tmp_path: Path, pack: str, inputs: dict[str, Any]
) -> None:
    manifest = (EXAMPLES / pack).read_text()
    if inputs.pop("abort", False):
        manifest = manifest.replace("failureAction: warn", "failureAction: abort")
    compiled = compile_manifest(manifest, inputs)
    simulated = flat_simulation(simulate(compiled.plan, compiled.plan_hash)["steps"])
    assert any(s.get("statusReason") in ("policy-passes", "policy-fails") for s in simulated)
    _, state, _ = await run_to_end(dev_env.client, tmp_path, manifest, inputs)
    ran = {s.stepId: s for s in state.steps}
    for step in simulated:
        run = ran[step["id"]]
        reason = step.get("statusReason")
        if step["status"] == "Skipped":
            expected: tuple[str, str | None] = ("Skipped", reason)
        elif step["kind"] == "GatePolicy":
            expected = RUN_OF_VERDICT[reason or "", step["policyInfo"]["failureAction"]]
            assert run.outputs == {"passed": reason == "policy-passes"}, step["id"]
        else:
            expected = ("Succeeded", None)
        assert (run.status, run.statusReason) == expected, (step["id"], run)
