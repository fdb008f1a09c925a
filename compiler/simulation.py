"""Simulation: what a run of a plan would do, worked out without running anything.

`simulate` returns the contract's `SimulationResponse` (plus a history estimate and warnings). It
decides at plan time whatever depends only on values known before the run: the pack's inputs,
literals, and the item and index of iterations it could expand. Anything that reads a step's
outputs or status is left to the run.

- A step whose `when` is known false is `Skipped` with reason `condition-false`, and so is
  everything inside it.
- A map or loop whose items are known is expanded: an iteration's steps get the ids the run gives
  them, `<mapId>[<i>]::<templateId>` and `<loopId>[<i>]::<childId>`, and so do their descendants
  (prefixes nest: `outer[0]::inner[1]::step`). Unknown items list the template or body once, under
  their own ids.
- A conditional lists every branch's steps, then the `else` steps; a branch that cannot be taken
  (its condition is known false, or an earlier branch's is known true) is `Skipped` with reason
  `branch-not-taken`, as is `else` when some branch is known true. The first true branch wins.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Literal, NotRequired, assert_never, cast

# pydantic reads these shapes too (the API's response), and wants typing_extensions' TypedDict
# on Python < 3.12.
from typing_extensions import TypedDict

from compiler import plan as p
from compiler.expressions import (
    ExpressionError,
    evaluate,
    evaluate_condition,
    references,
    strip_braces,
)
from compiler.history import estimate_history
from compiler.quorum import count_seats

SimulationStatus = Literal[
    "Pending", "Skipped", "RequiresApproval", "RequiresPolicy", "WillIterate", "WillBranch"
]

_ACTIVE_STATUS: dict[str, SimulationStatus] = {
    "run": "Pending",
    "parallel": "Pending",
    "map": "WillIterate",
    "loop": "WillIterate",
    "conditional": "WillBranch",
    "gate.approval": "RequiresApproval",
    "gate.policy": "RequiresPolicy",
}


class LoopInfo(TypedDict):
    itemsExpression: str
    iterator: str
    index: str
    maxIterations: int
    aggregationMode: Literal["collect", "merge", "last", "first", "none"]


class BranchInfo(TypedDict):
    condition: str
    stepCount: int


class ConditionalInfo(TypedDict):
    branches: list[BranchInfo]
    elseStepCount: int
    outputUnion: bool


class PolicyInfo(TypedDict):
    policyId: str
    policyVersion: str
    failureAction: Literal["abort", "warn", "requestOverride", "branch"]
    retryCount: int


class QuorumInfo(TypedDict):
    grant: str
    requiredApprovals: int


class ApprovalInfo(TypedDict):
    """Who may decide an approval and what it needs; at plan time every seat is still missing."""

    approvalId: str
    requiredApprovals: int
    grants: list[str]
    allowRequester: bool
    quorum: list[QuorumInfo]
    missing: list[str]
    expiresAfterSeconds: NotRequired[int]
    onExpiry: Literal["reject", "approve"]


class SimulationStep(TypedDict):
    """The contract's SimulationStep; optional keys are left out rather than null."""

    id: str
    templateId: str
    kind: p.ContractKind
    enabled: bool
    status: SimulationStatus
    statusReason: NotRequired[str]
    uses: NotRequired[str]
    approvalId: NotRequired[str]
    gateMessage: NotRequired[str]
    maxParallel: NotRequired[int]
    continueOnError: bool
    loopInfo: NotRequired[LoopInfo]
    conditionalInfo: NotRequired[ConditionalInfo]
    policyInfo: NotRequired[PolicyInfo]
    children: list[SimulationStep]


class SimulationOutput(TypedDict):
    name: str
    type: str
    requiresRuntimeValue: bool
    pathExpression: NotRequired[str]
    valueExpression: NotRequired[str]


class SimulationResponse(TypedDict):
    """The contract's SimulationResponse, plus the history estimate and warnings.

    `historyEstimate` is the events the largest single workflow history of the run would hold;
    `historyEvents` counts the events of every workflow the run starts.
    """

    planHash: str
    failurePolicy: dict[str, Any]
    """The plan's `FailurePolicy`, as JSON."""
    steps: list[SimulationStep]
    outputs: list[SimulationOutput]
    hasPendingApprovals: bool
    approvals: list[ApprovalInfo]
    historyEstimate: int
    historyEvents: int
    warnings: list[str]


def approval_info(spec: p.ApprovalSpec) -> ApprovalInfo:
    """Who may decide an approval and what it needs before anyone has voted."""
    info: ApprovalInfo = {
        "approvalId": spec.id,
        "requiredApprovals": spec.requiredApprovals,
        "grants": list(spec.grants),
        "allowRequester": spec.allowRequester,
        "quorum": [
            {"grant": g.grant, "requiredApprovals": g.requiredApprovals} for g in spec.quorum
        ],
        "missing": count_seats(spec, ()).describe_missing(),
        "onExpiry": spec.onExpiry,
    }
    if spec.expiresAfterSeconds is not None:
        info["expiresAfterSeconds"] = spec.expiresAfterSeconds
    return info


class _Unknown:
    """A value that is only known once the run gets there."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()

# Past this many steps, a simulation stops expanding iterations (see `simulate`).
MAX_SIMULATED_STEPS = 50_000

# The scope names an iteration binds; they hide outer ones of the same name.
_MAP_VARS = ("item", "index")


def simulate(
    plan: p.Plan, plan_hash: str, *, max_steps: int = MAX_SIMULATED_STEPS
) -> SimulationResponse:
    """Simulate a run of `plan` (whose hash is `plan_hash`), without I/O or Temporal.

    Iterations are expanded while the simulation lists at most `max_steps` steps. Past that (nested
    loops multiply quickly) every map and loop lists its template or body once, and the history
    estimate multiplies by the iteration counts instead.
    """
    known = {"inputs": plan.inputs}
    try:
        sim = _Simulator(plan, max_steps)
        steps = sim.sequence(plan.steps, "", known, None)
    except _TooManySteps:
        sim = _Simulator(plan, None)
        steps = sim.sequence(plan.steps, "", known, None)
        sim.warnings.insert(
            0,
            f"the run has more than {max_steps} steps: iterations are listed once, not expanded",
        )
    estimate = estimate_history(plan, steps, sim.iterations)
    return {
        "planHash": plan_hash,
        "failurePolicy": plan.failure.model_dump(),
        "steps": steps,
        "outputs": [_output(o) for o in plan.outputs],
        "hasPendingApprovals": sim.waits_for_approval,
        "approvals": [approval_info(a) for a in plan.approvals],
        "historyEstimate": estimate.largest,
        "historyEvents": estimate.total,
        "warnings": sim.warnings + estimate.warnings,
    }


@lru_cache(maxsize=4096)
def _roots(expression: str) -> frozenset[str] | None:
    """The scope names an expression reads, or None when it does not parse."""
    try:
        return frozenset(r.root for r in references(expression))
    except ExpressionError:
        return None


def known_value(expression: str, known: Mapping[str, Any]) -> Any:
    """The value of an expression when everything it reads is in `known`, else UNKNOWN."""
    expression = strip_braces(expression)
    roots = _roots(expression)
    if roots is None or not roots <= known.keys():
        return UNKNOWN
    try:
        return evaluate(expression, known)
    except ExpressionError:
        return UNKNOWN


def known_condition(condition: str | bool | None, known: Mapping[str, Any]) -> bool | None:
    """A condition's truth when it can be decided from `known` alone, else None."""
    if condition is None or isinstance(condition, bool):
        return evaluate_condition(condition, known)
    condition = strip_braces(condition)
    roots = _roots(condition)
    if roots is None or not roots <= known.keys():
        return None
    try:
        return evaluate_condition(condition, known)
    except ExpressionError:
        return None


def _output(out: p.OutputSpec) -> SimulationOutput:
    result: SimulationOutput = {"name": out.name, "type": out.type, "requiresRuntimeValue": True}
    if out.path is not None:
        result["pathExpression"] = out.path
    if out.expression is not None:
        result["valueExpression"] = out.expression
        roots = _roots(out.expression)
        # A file is written by a step; an object built from inputs alone is known now.
        if out.type == "object" and roots is not None and roots <= {"inputs"}:
            result["requiresRuntimeValue"] = False
    return result


def _without(known: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in known.items() if k not in names}


class _TooManySteps(Exception):
    """Expanding every iteration would list more steps than allowed."""


class _Simulator:
    def __init__(self, plan: p.Plan, max_steps: int | None) -> None:
        """`max_steps` None: never expand iterations; record their counts in `iterations`."""
        self.plan = plan
        self.max_steps = max_steps
        self.count = 0
        self.warnings: list[str] = []
        self.waits_for_approval = False
        # Simulated id of a map or loop listed once -> how many iterations it has.
        self.iterations: dict[str, int] = {}

    def sequence(
        self,
        steps: Sequence[p.PlanStep],
        prefix: str,
        known: Mapping[str, Any],
        skip: str | None,
    ) -> list[SimulationStep]:
        return [self.step(s, prefix, known, skip) for s in steps]

    def items(self, step_id: str, source: str | tuple[Any, ...], known: Mapping[str, Any]) -> Any:
        """A map's or loop's items when known (as a list), else UNKNOWN."""
        if isinstance(source, tuple):
            return list(source)
        value = known_value(source, known)
        if value is UNKNOWN or isinstance(value, list):
            return value
        if value is None:  # the run treats no items as zero items
            return []
        self.warnings.append(
            f"{step_id}: items evaluate to {type(value).__name__}, not a list: the step will fail"
        )
        return UNKNOWN

    def step(
        self, step: p.PlanStep, prefix: str, known: Mapping[str, Any], skip: str | None
    ) -> SimulationStep:
        """Simulate one step. `skip` is the reason an enclosing step is skipped, if it is."""
        self.count += 1
        if self.max_steps is not None and self.count > self.max_steps:
            raise _TooManySteps
        sid = prefix + step.id
        if skip is None and known_condition(step.when, known) is False:
            skip = "condition-false"
        # Built in the contract's property order, which is also the easiest to read.
        node: dict[str, Any] = {
            "id": sid,
            "templateId": step.id,
            "kind": p.CONTRACT_KIND[step.kind],
            "enabled": skip is None,
            "status": "Skipped" if skip is not None else _ACTIVE_STATUS[step.kind],
        }
        if skip is not None:
            node["statusReason"] = skip
        children: list[SimulationStep] = []

        match step:
            case p.RunStep():
                node["uses"] = step.uses
            case p.ApprovalGateStep():
                node["approvalId"] = step.approvalId
                if step.message is not None:
                    node["gateMessage"] = step.message
                self.waits_for_approval |= skip is None
            case p.PolicyGateStep():
                if step.approvalId is not None:
                    node["approvalId"] = step.approvalId
                node["policyInfo"] = {
                    "policyId": step.policyId,
                    "policyVersion": step.policyVersion,
                    "failureAction": step.failureAction,
                    "retryCount": step.retryCount,
                }
                self.waits_for_approval |= skip is None and p.may_wait_for_approval(step)
                children = self.sequence(step.elseSteps, prefix, known, skip)
            case p.ParallelStep():
                node["maxParallel"] = step.maxParallel
                children = self.sequence(step.steps, prefix, known, skip)
            case p.MapStep():
                node["maxParallel"] = step.maxParallel
                children = self.map_children(step, sid, prefix, known, skip)
            case p.LoopStep():
                node["loopInfo"] = {
                    "itemsExpression": _loop_source(step),
                    "iterator": step.iterator,
                    "index": step.index,
                    "maxIterations": step.maxIterations,
                    "aggregationMode": step.aggregation,
                }
                children = self.loop_children(step, sid, prefix, known, skip)
            case p.ConditionalStep():
                node["conditionalInfo"] = {
                    "branches": [
                        {"condition": _condition_text(b.condition), "stepCount": len(b.steps)}
                        for b in step.branches
                    ],
                    "elseStepCount": len(step.elseSteps),
                    "outputUnion": step.outputUnion,
                }
                children = self.branch_children(step, prefix, known, skip)
            case _:
                assert_never(step)
        node["continueOnError"] = step.continueOnError
        # The info blocks follow continueOnError in the contract.
        for key in ("loopInfo", "conditionalInfo", "policyInfo"):
            if key in node:
                node[key] = node.pop(key)
        node["children"] = children
        return cast(SimulationStep, node)

    def map_children(
        self,
        step: p.MapStep,
        sid: str,
        prefix: str,
        known: Mapping[str, Any],
        skip: str | None,
    ) -> list[SimulationStep]:
        items = self.items(sid, step.items, known)
        if items is UNKNOWN or self.max_steps is None:
            if items is not UNKNOWN:
                self.iterations[sid] = len(items)
            return [self.step(step.step, prefix, _without(known, _MAP_VARS), skip)]
        return [
            self.step(step.step, f"{sid}[{i}]::", {**known, "item": item, "index": i}, skip)
            for i, item in enumerate(items)
        ]

    def loop_children(
        self,
        step: p.LoopStep,
        sid: str,
        prefix: str,
        known: Mapping[str, Any],
        skip: str | None,
    ) -> list[SimulationStep]:
        items: Any
        if step.itemsRange is not None:
            items = range(*step.itemsRange)
        elif step.itemsStatic is not None:
            items = list(step.itemsStatic)
        else:
            assert step.itemsExpression is not None
            items = self.items(sid, step.itemsExpression, known)
        if items is not UNKNOWN and len(items) > step.maxIterations:
            self.warnings.append(
                f"{sid}: {len(items)} items, more than maxIterations ({step.maxIterations}): "
                "the step will fail"
            )
            items = items[: step.maxIterations]
        if items is UNKNOWN or self.max_steps is None:
            if items is not UNKNOWN:
                self.iterations[sid] = len(items)
            inner = _without(known, (step.iterator, step.index))
            return self.sequence(step.steps, prefix, inner, skip)
        children: list[SimulationStep] = []
        for i, item in enumerate(items):
            scope = {**known, step.iterator: item, step.index: i}
            children += self.sequence(step.steps, f"{sid}[{i}]::", scope, skip)
        return children

    def branch_children(
        self,
        step: p.ConditionalStep,
        prefix: str,
        known: Mapping[str, Any],
        skip: str | None,
    ) -> list[SimulationStep]:
        children: list[SimulationStep] = []
        decided = False  # an earlier branch is known to be taken whenever it is reached
        for branch in step.branches:
            value = known_condition(branch.condition, known)
            reason = skip or ("branch-not-taken" if decided or value is False else None)
            children += self.sequence(branch.steps, prefix, known, reason)
            decided = decided or value is True
        reason = skip or ("branch-not-taken" if decided else None)
        return children + self.sequence(step.elseSteps, prefix, known, reason)


def _condition_text(condition: str | bool) -> str:
    if isinstance(condition, bool):
        return "true" if condition else "false"
    return condition


def _loop_source(step: p.LoopStep) -> str:
    if step.itemsExpression is not None:
        return step.itemsExpression
    if step.itemsRange is not None:
        start, end, stride = step.itemsRange
        return f"range({start}, {end}, {stride})"
    return json.dumps(list(step.itemsStatic or ()), sort_keys=True, separators=(",", ":"))
