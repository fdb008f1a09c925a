"""api/redrive.py's decisions, pure: where a redrive restarts, what it reuses, and
which gates lapse. (tests/api/test_redrive.py runs the same rules end to end.)"""

from __future__ import annotations

import pytest

from api.redrive import RedrivePointError, decide
from compiler import compile_manifest
from workflows.contract.initial import initial_state
from workflows.contract.state import RunMeta, RunStateSnapshot

PACK = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: decide, version: 1.0.0}
spec:
  inputs:
    - {name: n, type: integer, default: 1}
  approvals:
    - {id: ok, grants: [g], requiredApprovals: 1}
  steps:
    - {id: a, run: {uses: "builtin:noop"}}
    - {id: gate, gate: {approval: {id: ok}}}
    - id: both
      parallel:
        steps:
          - {id: left, run: {uses: "builtin:noop"}}
          - {id: right, run: {uses: "builtin:noop"}}
    - {id: z, run: {uses: "builtin:noop"}}
"""


def ended(statuses: dict[str, str]) -> RunStateSnapshot:
    """The pack's run, failed, with these step statuses (the rest Pending)."""
    compiled = compile_manifest(PACK, {"n": 1})
    meta = RunMeta(runId="old", tenant="t", requestedAt="2026-01-01T00:00:00.000Z")
    state = initial_state(compiled.plan, compiled.plan_hash, meta)
    steps = [
        s.model_copy(update={"status": statuses.get(s.stepId, "Pending")}) for s in state.steps
    ]
    approvals = [
        a.model_copy(update={"status": "approved", "stepId": "gate"}) for a in state.approvals
    ]
    return state.model_copy(update={"steps": steps, "approvals": approvals, "status": "failed"})


PASSED_GATE = {"a": "Succeeded", "gate": "Succeeded", "left": "Succeeded", "right": "Failed"}


def test_default_restart_is_the_top_level_step_holding_the_first_failure() -> None:
    same = compile_manifest(PACK, {"n": 1})
    decision = decide(ended(PASSED_GATE), same.plan, same.plan_hash, None)
    assert decision.restart_from == "both"
    assert decision.reused == ["a", "gate"]
    assert decision.approvals_carried == ["ok"] and decision.gates_lapsed == []
    # A parallel at the restart point runs again whole: its succeeded branch is not reused.
    assert "left" in decision.rerun


def test_a_changed_plan_decides_every_gate_again() -> None:
    changed = compile_manifest(PACK, {"n": 2})
    decision = decide(ended(PASSED_GATE), changed.plan, changed.plan_hash, None)
    assert decision.reused == ["a"]
    assert decision.gates_lapsed == ["gate"]
    assert decision.approvals_carried == [] and decision.redrive.approvals == []


def test_restart_points() -> None:
    same = compile_manifest(PACK, {"n": 1})
    earlier = decide(ended(PASSED_GATE), same.plan, same.plan_hash, "a")
    assert earlier.reused == [] and earlier.restart_from == "a"
    with pytest.raises(RedrivePointError, match=r"inside 'both'.*use fromStep 'both'"):
        decide(ended(PASSED_GATE), same.plan, same.plan_hash, "left")
    with pytest.raises(RedrivePointError, match="no step 'nope'"):
        decide(ended(PASSED_GATE), same.plan, same.plan_hash, "nope")
