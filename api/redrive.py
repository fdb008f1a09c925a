"""Redrive: what a new run of a failed or cancelled run takes over from it, decided up front.

The restart point is a top-level step of the plan: `fromStep`, or by default the top-level step
holding the first step that failed (for a cancelled run, the first top-level step that did not
succeed). A restart point inside a parallel, map, loop or conditional is refused (400), naming
the top-level step to restart from instead.

- Run steps that succeeded before the restart point are not run again: they show `Succeeded`
  with reason `reused` and their outputs carry over. When the restart point is a map, its
  iterations that succeeded are reused too, so only the failed items run again.
- Gates (approval and policy) before the restart point carry over only when the new planHash
  equals the old one: any change of inputs or pack version changes the hash, and then every
  gate is decided again. An approval never carries over to a plan nobody approved.

Pure: the route reads the old run and compiles the new plan; this decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from compiler.plan import Plan
from workflows.contract.state import Redrive, ReusedStep, RunStateSnapshot, StepState

LEAF_KINDS = frozenset({"Run"})
GATE_KINDS = frozenset({"GateApproval", "GatePolicy"})


class RedrivePointError(ValueError):
    """`fromStep` names no top-level step of the plan; the message says what would work."""


@dataclass
class RedriveDecision:
    restart_from: str
    redrive: Redrive
    reused: list[str] = field(default_factory=list)
    rerun: list[str] = field(default_factory=list)
    gates_lapsed: list[str] = field(default_factory=list)
    approvals_carried: list[str] = field(default_factory=list)

    def preview(self, old_hash: str, new_hash: str) -> dict[str, Any]:
        return {
            "redriveOf": self.redrive.of,
            "restartFrom": self.restart_from,
            "planHash": new_hash,
            "planHashChanged": old_hash != new_hash,
            "reusedSteps": self.reused,
            "rerunSteps": self.rerun,
            "gatesLapsed": self.gates_lapsed,
            "approvalsCarried": self.approvals_carried,
        }


def _top_level(state: StepState, by_id: dict[str, StepState]) -> str:
    node = state
    while node.parentId is not None and node.parentId in by_id:
        node = by_id[node.parentId]
    return node.stepId


def decide(
    old: RunStateSnapshot,
    new_plan: Plan,
    new_hash: str,
    from_step: str | None,
) -> RedriveDecision:
    """What a redrive of `old` (its state with every step and its outputs) onto `new_plan` reuses.

    Raises RedrivePointError for a `from_step` that is unknown or not a top-level step.
    """
    order = [s.id for s in new_plan.steps]
    by_id = {s.stepId: s for s in old.steps}
    if from_step is not None:
        if from_step not in order:
            if from_step in by_id:
                top = _top_level(by_id[from_step], by_id)
                raise RedrivePointError(
                    f"step {from_step!r} is inside {top!r}: a redrive restarts from a top-level "
                    f"step (a map restarts only its failed items); use fromStep {top!r}"
                )
            raise RedrivePointError(f"no step {from_step!r} in the pack's top-level steps")
        restart = from_step
    else:
        restart = _default_restart(old, by_id, order)
    restart_index = order.index(restart)
    before = set(order[:restart_index])
    same_plan = new_hash == old.planHash

    decision = RedriveDecision(restart_from=restart, redrive=Redrive(of=old.runId))
    for state in old.steps:
        top = _top_level(state, by_id)
        if top not in order:
            continue  # a step the new pack version no longer has
        earlier = top in before
        map_item = top == restart and state.stepId != top and "[" in state.stepId
        succeeded = state.status == "Succeeded"
        if state.kind in GATE_KINDS and earlier and succeeded:
            if same_plan:
                decision.redrive.reuse[state.stepId] = ReusedStep(
                    outputs=state.outputs, attempts=max(state.attempts, 1)
                )
                decision.reused.append(state.stepId)
            else:
                decision.gates_lapsed.append(state.stepId)
                decision.rerun.append(state.stepId)
        elif state.kind in LEAF_KINDS and succeeded and (earlier or map_item):
            decision.redrive.reuse[state.stepId] = ReusedStep(
                outputs=state.outputs, attempts=max(state.attempts, 1)
            )
            decision.reused.append(state.stepId)
        elif state.kind in LEAF_KINDS | GATE_KINDS:
            decision.rerun.append(state.stepId)
    if same_plan:
        reused_gates = set(decision.reused)
        for approval in old.approvals:
            if approval.status == "approved" and approval.stepId in reused_gates:
                decision.redrive.approvals.append(approval)
                decision.approvals_carried.append(approval.approvalId)
    return decision


def _default_restart(old: RunStateSnapshot, by_id: dict[str, StepState], order: list[str]) -> str:
    for state in old.steps:
        if state.status == "Failed":
            top = _top_level(state, by_id)
            if top in order:
                return top
    for step_id in order:
        found = by_id.get(step_id)
        if found is None or found.status != "Succeeded":
            return step_id
    return order[0]
