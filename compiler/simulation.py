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
- A step's outputs are known when it is certain to run and its executor's outputs follow from
  its `with` alone (`builtin:echo`, which outputs its rendered `with`). Later
  expressions may read them as `steps.<id>.outputs` (and `steps.<id>.status`, `Succeeded`).
- A policy gate whose condition reads only known values is decided here, as the run will decide
  it: `statusReason` is `policy-passes` or `policy-fails` (`policy-error` when the condition
  fails to evaluate), and what follows shows it: a pass skips the `else` steps
  (`policy-passed`); a failure runs them (`branch`), waits for the override approval
  (`requestOverride`: status `RequiresApproval`), goes on (`warn`), or fails the run (`abort`:
  the steps after it are `Skipped` with `previous-step-failed`). Otherwise `statusReason` is
  `policy-unknown`. The contract's SimulationStep has no field for prose, so `gateMessage` says
  why, naming what the condition reads that is only known at run time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
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
    render,
    secret_name,
    strip_braces,
    template_parts,
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

# Executors whose outputs follow from their rendered `with` alone (activities/builtins).
# `builtin:noop` (outputs `{}`) is left out on purpose: packs and tests use it as a stand-in for
# a step whose outputs only the run knows.
_KNOWN_OUTPUTS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"builtin:echo": dict}


def simulate(
    plan: p.Plan, plan_hash: str, *, max_steps: int = MAX_SIMULATED_STEPS
) -> SimulationResponse:
    """Simulate a run of `plan` (whose hash is `plan_hash`), without I/O or Temporal.

    Iterations are expanded while the simulation lists at most `max_steps` steps. Past that (nested
    loops multiply quickly) every map and loop lists its template or body once, and the history
    estimate multiplies by the iteration counts instead.
    """
    try:
        sim = _Simulator(plan, max_steps)
        steps = sim.sequence(plan.steps, "", {"inputs": plan.inputs, "steps": {}}, None)
    except _TooManySteps:
        # Afresh: the first attempt learned step results into its scope as it went.
        sim = _Simulator(plan, None)
        steps = sim.sequence(plan.steps, "", {"inputs": plan.inputs, "steps": {}}, None)
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
    reads = _reads(expression)
    return None if reads is None else frozenset(root for root, _ in reads)


@lru_cache(maxsize=4096)
def _reads(expression: str) -> frozenset[tuple[str, str | None]] | None:
    """(root, first field) of each scope name an expression reads; None when it does not parse."""
    try:
        return frozenset((r.root, r.name) for r in references(expression))
    except ExpressionError:
        return None


def unknown_reads(expression: str, known: Mapping[str, Any]) -> list[str] | None:
    """What a bare expression reads that `known` does not hold (`steps.scan`, `item`), sorted;
    None when it does not parse.

    `known["steps"]` holds only the steps whose results are known, so a step is read by name:
    the run's `steps` holds every step that has finished.
    """
    reads = _reads(expression)
    if reads is None:
        return None
    steps = known.get("steps", {})
    missing: set[str] = set()
    for root, name in reads:
        if root not in known:
            missing.add(root)
        elif root == "steps" and (name is None or name not in steps):
            missing.add("steps" if name is None else f"steps.{name}")
    return sorted(missing)


def known_value(expression: str, known: Mapping[str, Any]) -> Any:
    """The value of an expression when everything it reads is in `known`, else UNKNOWN."""
    expression = strip_braces(expression)
    if unknown_reads(expression, known) != []:
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
    if unknown_reads(condition, known) != []:
        return None
    try:
        return evaluate_condition(condition, known)
    except ExpressionError:
        return None


def known_rendering(value: Any, known: Mapping[str, Any]) -> Any:
    """`value` with its templates rendered as the run renders them, when everything they read
    is known and none names a secret (the worker fills those in); else UNKNOWN."""
    if isinstance(value, str):
        for expression in template_parts(value):
            if secret_name(expression) is not None or unknown_reads(expression, known) != []:
                return UNKNOWN
        try:
            return render(value, known)
        except ExpressionError:
            return UNKNOWN
    if isinstance(value, list):
        items = [known_rendering(v, known) for v in value]
        return UNKNOWN if any(v is UNKNOWN for v in items) else items
    if isinstance(value, dict):
        fields = {k: known_rendering(v, known) for k, v in value.items()}
        return UNKNOWN if any(v is UNKNOWN for v in fields.values()) else fields
    return value


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


def _iteration(known: Mapping[str, Any], bound: Mapping[str, Any]) -> dict[str, Any]:
    """The scope of one iteration: its own `steps`, which the steps around it do not see."""
    return {**known, "steps": dict(known["steps"]), **bound}


class _TooManySteps(Exception):
    """Expanding every iteration would list more steps than allowed."""


PolicyVerdict = Literal["policy-passes", "policy-fails", "policy-error", "policy-unknown"]


def _fork(known: Mapping[str, Any]) -> dict[str, Any]:
    """A scope whose steps' results stay inside: for steps the run may or may not get to, so
    what they would produce is seen by the steps after them there, not by the steps after the
    step that holds them."""
    return {**known, "steps": dict(known["steps"])}


def _learn(known: Mapping[str, Any], step_id: str, outputs: dict[str, Any]) -> None:
    """A step that will have succeeded with `outputs` whenever a later step of `known` runs."""
    known["steps"][step_id] = {"status": "Succeeded", "outputs": outputs}


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
        # Simulated ids of the steps known to fail whenever the run reaches them.
        self.failing: set[str] = set()

    def sequence(
        self,
        steps: Sequence[p.PlanStep],
        prefix: str,
        known: Mapping[str, Any],
        skip: str | None,
    ) -> list[SimulationStep]:
        """Steps one after another: after one known to fail the rest are skipped, as the run
        skips them (`previous-step-failed`)."""
        nodes: list[SimulationStep] = []
        for s in steps:
            nodes.append(self.step(s, prefix, known, skip))
            if skip is None and self.stops(nodes[-1], s):
                skip = "previous-step-failed"
        return nodes

    def stops(self, node: SimulationStep, step: p.PlanStep) -> bool:
        """Whether a step is known to fail, and so to stop what holds it, when it is reached."""
        return node["id"] in self.failing and not step.continueOnError

    def items(
        self, step_id: str, source: str | tuple[Any, ...] | p.ItemsRange, known: Mapping[str, Any]
    ) -> Any:
        """A map's or loop's items when known (as a sequence), else UNKNOWN."""
        if isinstance(source, tuple):
            return list(source)
        if isinstance(source, p.ItemsRange):
            return source.values()  # counted, not built: a range map may have a million
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
        """Simulate one step. `skip` is the reason an enclosing step is skipped, if it is.

        `known` is the scope of the step's frame; a step that will surely have run with known
        outputs when the steps after it run is added to its `steps`.
        """
        self.count += 1
        if self.max_steps is not None and self.count > self.max_steps:
            raise _TooManySteps
        sid = prefix + step.id
        when = known_condition(step.when, known) if skip is None else None
        if when is False:
            skip = "condition-false"
        # The step runs whenever its frame gets this far (its `when` is known true).
        sure = when is True
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
                outputs_of = _KNOWN_OUTPUTS.get(step.uses)
                if sure and outputs_of is not None:
                    rendered = known_rendering(step.with_, known)
                    if rendered is not UNKNOWN:
                        _learn(known, step.id, outputs_of(rendered))
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
                children = self.policy_gate(step, node, prefix, known, skip, sure)
            case p.ParallelStep():
                node["maxParallel"] = step.maxParallel
                # Side by side: no child sees another's results; the steps after the block see
                # them all, unless the block goes on past a child that did not run.
                shared = _fork(known)
                children = [self.step(c, prefix, shared, skip) for c in step.steps]
                if sure and not step.continueOnError:
                    known["steps"].update(shared["steps"])
                if any(self.stops(n, c) for n, c in zip(children, step.steps, strict=True)):
                    self.failing.add(sid)
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
                children = self.branch_children(step, sid, prefix, known, skip, sure)
            case _:
                assert_never(step)
        if not sure:
            # Known to fail if it runs, but it may not: what follows it is left to the run.
            self.failing.discard(sid)
        node["continueOnError"] = step.continueOnError
        # The info blocks follow continueOnError in the contract.
        for key in ("loopInfo", "conditionalInfo", "policyInfo"):
            if key in node:
                node[key] = node.pop(key)
        node["children"] = children
        return cast(SimulationStep, node)

    def policy_verdict(
        self, step: p.PolicyGateStep, known: Mapping[str, Any]
    ) -> tuple[PolicyVerdict, str]:
        """How the run will decide a policy gate, when that is known now, and in words."""
        policy = self.plan.policy(step.policyId)
        assert policy is not None  # the compiler refuses a gate naming an undeclared policy
        label = f"policy {policy.id}@{policy.version}"
        condition = policy.condition
        if isinstance(condition, bool):
            passed = condition
        else:
            expression = strip_braces(condition)
            missing = unknown_reads(expression, known)
            if missing:
                return (
                    "policy-unknown",
                    f"{label} is decided when the run reaches this gate: its condition reads "
                    f"{', '.join(missing)}, known only at run time",
                )
            try:
                passed = evaluate_condition(expression, known)
            except ExpressionError as exc:
                return (
                    "policy-error",
                    f"{label} cannot be evaluated with these inputs ({exc}): the step fails",
                )
        if passed:
            after = {
                "abort": "",
                "warn": "",
                "requestOverride": ": no override is needed",
                "branch": ": its else steps are skipped",
            }[step.failureAction]
            return "policy-passes", f"{label} passes with these inputs{after}"
        after = {
            "abort": ": the step fails",
            "warn": ": the run logs a warning and goes on",
            "requestOverride": f": the run waits for approval {step.approvalId} to override it",
            "branch": ": its else steps run",
        }[step.failureAction]
        return "policy-fails", f"{label} fails with these inputs{after}"

    def policy_gate(
        self,
        step: p.PolicyGateStep,
        node: dict[str, Any],
        prefix: str,
        known: Mapping[str, Any],
        skip: str | None,
        sure: bool,
    ) -> list[SimulationStep]:
        """Decide a policy gate when its condition's values are known; its `else` steps.

        `sure`: the gate runs whenever its frame gets this far, so what it and its `else` steps
        produce is known to the steps after it."""
        sid = node["id"]
        if skip is not None:
            return self.sequence(step.elseSteps, prefix, _fork(known), skip)
        verdict, message = self.policy_verdict(step, known)
        node["statusReason"] = verdict
        node["gateMessage"] = message
        fails = verdict in ("policy-fails", "policy-error")
        if verdict == "policy-unknown":
            self.waits_for_approval |= p.may_wait_for_approval(step)
            return self.sequence(step.elseSteps, prefix, _fork(known), None)
        if verdict == "policy-passes":
            if sure:
                _learn(known, step.id, {"passed": True})
            return self.sequence(step.elseSteps, prefix, _fork(known), "policy-passed")
        if verdict == "policy-error" or step.failureAction == "abort":
            self.failing.add(sid)
            self.warnings.append(f"{sid}: {message}")
        elif step.failureAction == "requestOverride":
            node["status"] = "RequiresApproval"
            self.waits_for_approval = True
        elif step.failureAction == "warn" and sure:
            _learn(known, step.id, {"passed": False})
        if not fails or step.failureAction != "branch" or verdict == "policy-error":
            reason = "policy-error" if verdict == "policy-error" else "branch-not-taken"
            return self.sequence(step.elseSteps, prefix, _fork(known), reason)
        # A failed `branch` gate runs its else steps in the gate's own frame.
        scope = known if sure and not step.continueOnError else _fork(known)
        children = self.sequence(step.elseSteps, prefix, scope, None)
        if any(self.stops(n, s) for n, s in zip(children, step.elseSteps, strict=True)):
            self.failing.add(sid)
        return children

    def map_children(
        self,
        step: p.MapStep,
        sid: str,
        prefix: str,
        known: Mapping[str, Any],
        skip: str | None,
    ) -> list[SimulationStep]:
        items = self.items(sid, step.items, known)
        if (
            items is not UNKNOWN
            and self.max_steps is not None
            and self.count + len(items) > self.max_steps
        ):
            raise _TooManySteps  # known now: no need to list steps up to the limit first
        if items is UNKNOWN or self.max_steps is None:
            if items is not UNKNOWN:
                self.iterations[sid] = len(items)
            return [self.step(step.step, prefix, _fork(_without(known, _MAP_VARS)), skip)]
        children = [
            self.step(
                step.step, f"{sid}[{i}]::", _iteration(known, {"item": item, "index": i}), skip
            )
            for i, item in enumerate(items)
        ]
        if any(self.stops(child, step.step) for child in children):
            self.failing.add(sid)
        return children

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
            inner = _fork(_without(known, (step.iterator, step.index)))
            return self.sequence(step.steps, prefix, inner, skip)
        children: list[SimulationStep] = []
        for i, item in enumerate(items):
            scope = _iteration(known, {step.iterator: item, step.index: i})
            nodes = self.sequence(step.steps, f"{sid}[{i}]::", scope, skip)
            children += nodes
            if skip is None and any(
                self.stops(n, s) for n, s in zip(nodes, step.steps, strict=True)
            ):
                self.failing.add(sid)
                if not step.continueOnError:
                    # The run starts no iteration after a failed one.
                    skip = "previous-step-failed"
        return children

    def branch_children(
        self,
        step: p.ConditionalStep,
        sid: str,
        prefix: str,
        known: Mapping[str, Any],
        skip: str | None,
        sure: bool,
    ) -> list[SimulationStep]:
        values = [known_condition(b.condition, known) for b in step.branches]
        # The branch the run takes, when that is known: the first true one after only false
        # ones (len(branches) for `else`); None when a condition is left to the run.
        taken: int | None = len(values)
        for i, value in enumerate(values):
            if value is not False:
                taken = i if value is True else None
                break
        children: list[SimulationStep] = []
        decided = False  # an earlier branch is known to be taken whenever it is reached
        sequences = [*(b.steps for b in step.branches), step.elseSteps]
        for i, steps in enumerate(sequences):
            value = values[i] if i < len(values) else None
            reason = skip or ("branch-not-taken" if decided or value is False else None)
            # The steps after the conditional see the results of a branch the run surely takes.
            scope = known if sure and i == taken and not step.continueOnError else _fork(known)
            nodes = self.sequence(steps, prefix, scope, reason)
            children += nodes
            if i == taken and any(self.stops(n, s) for n, s in zip(nodes, steps, strict=True)):
                self.failing.add(sid)
            decided = decided or value is True
        return children


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
