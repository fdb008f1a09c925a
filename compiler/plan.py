"""Plan models: the normalised, frozen form of a manifest that the workflow interprets.

The plan is a wire format: running histories replay it, so fields are only ever added (with
defaults), never repurposed. `schemaVersion` says which shape a plan has.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, assert_never

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

StepKind = Literal["run", "parallel", "map", "loop", "conditional", "gate.approval", "gate.policy"]

ContractKind = Literal[
    "Run", "Parallel", "Map", "Loop", "Conditional", "GateApproval", "GatePolicy"
]
"""A step kind as the REST contract names it."""

CONTRACT_KIND: dict[str, ContractKind] = {
    "run": "Run",
    "parallel": "Parallel",
    "map": "Map",
    "loop": "Loop",
    "conditional": "Conditional",
    "gate.approval": "GateApproval",
    "gate.policy": "GatePolicy",
}


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PackRef(Frozen):
    name: str
    version: str


class FailurePolicy(Frozen):
    """The pack's failure policy: the one definition, also what runs and simulations show."""

    maxAttempts: int = Field(default=1, ge=1)
    backoffSeconds: int = Field(default=0, ge=0)
    continueOnError: bool = False


class Sandbox(Frozen):
    mode: Literal["sealed", "open"] = "sealed"
    egressAllowlist: tuple[str, ...] = ()
    cpuLimitMillicores: int = 1000
    memoryLimitMiB: int = 512
    quotaSeconds: int = 300


class Slo(Frozen):
    runP95Seconds: int | None = None
    approvalP95Seconds: int | None = None
    maxQueueDepth: int | None = None


class QuorumGroup(Frozen):
    grant: str
    requiredApprovals: int = 1


class ApprovalSpec(Frozen):
    id: str
    grants: tuple[str, ...] = ()
    requiredApprovals: int = 1
    expiresAfterSeconds: int | None = None
    onExpiry: Literal["reject", "approve"] = "reject"
    message: str | None = None
    allowRequester: bool = True
    """Whether the run's requester may decide. True when absent: plans compiled before the key
    existed (running histories) keep the behaviour they started with; the compiler always writes
    it, defaulting to False."""
    quorum: tuple[QuorumGroup, ...] = ()
    """Seats per grant, each filled by a distinct person; `requiredApprovals` covers them all."""


class PolicySpec(Frozen):
    id: str
    version: str
    condition: str | bool


class OutputSpec(Frozen):
    name: str
    type: Literal["file", "object"]
    path: str | None = None
    expression: str | None = None


class StepBase(Frozen):
    """Fields every step has. `when` is a bare expression (braces removed), a bool, or None."""

    id: str
    when: str | bool | None = None
    continueOnError: bool = False


class RunStep(StepBase):
    kind: Literal["run"] = "run"
    uses: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    timeoutSeconds: int = 3600
    maxAttempts: int = 1
    backoffSeconds: int = 0
    secrets: tuple[str, ...] = ()

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class ParallelStep(StepBase):
    kind: Literal["parallel"] = "parallel"
    steps: tuple[PlanStep, ...]
    maxParallel: int


class ItemsRange(Frozen):
    """A map's items counted rather than listed: `range(start, end, step)`. The plan of a
    million-item map stays a few bytes, and each chunk computes its own slice."""

    start: int
    end: int
    step: int

    def values(self) -> range:
        return range(self.start, self.end, self.step)


class MapStep(StepBase):
    kind: Literal["map"] = "map"
    items: str | tuple[Any, ...] | ItemsRange
    """An expression, a literal list, or a range. A range is an object here, not a new field, so
    the plans (and planHashes) of maps of the other two forms are what they always were."""
    step: PlanStep
    maxParallel: int


class LoopStep(StepBase):
    kind: Literal["loop"] = "loop"
    itemsExpression: str | None = None
    itemsRange: tuple[int, int, int] | None = None
    itemsStatic: tuple[Any, ...] | None = None
    iterator: str = "item"
    index: str = "index"
    maxIterations: int = 1000
    aggregation: Literal["collect", "merge", "last", "first", "none"] = "collect"
    steps: tuple[PlanStep, ...]


class BranchSpec(Frozen):
    condition: str | bool
    steps: tuple[PlanStep, ...] = ()


class ConditionalStep(StepBase):
    kind: Literal["conditional"] = "conditional"
    branches: tuple[BranchSpec, ...]
    elseSteps: tuple[PlanStep, ...] = ()
    outputUnion: bool = False


class ApprovalGateStep(StepBase):
    kind: Literal["gate.approval"] = "gate.approval"
    approvalId: str
    message: str | None = None


class PolicyGateStep(StepBase):
    kind: Literal["gate.policy"] = "gate.policy"
    policyId: str
    policyVersion: str
    failureAction: Literal["abort", "warn", "requestOverride", "branch"] = "abort"
    retryCount: int = 0
    approvalId: str | None = None
    elseSteps: tuple[PlanStep, ...] = ()


PlanStep = Annotated[
    RunStep
    | ParallelStep
    | MapStep
    | LoopStep
    | ConditionalStep
    | ApprovalGateStep
    | PolicyGateStep,
    Field(discriminator="kind"),
]


class Plan(Frozen):
    """A compiled pack: everything the workflow needs, nothing it may not see (no secret values)."""

    schemaVersion: int = SCHEMA_VERSION
    apiVersion: str = "stellaops.io/pack.v1"
    pack: PackRef
    inputs: dict[str, Any] = Field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    approvals: tuple[ApprovalSpec, ...] = ()
    policies: tuple[PolicySpec, ...] = ()
    failure: FailurePolicy = FailurePolicy()
    sandbox: Sandbox = Sandbox()
    slo: Slo | None = None
    steps: tuple[PlanStep, ...]
    outputs: tuple[OutputSpec, ...] = ()

    def approval(self, approval_id: str) -> ApprovalSpec | None:
        return next((a for a in self.approvals if a.id == approval_id), None)

    def policy(self, policy_id: str) -> PolicySpec | None:
        return next((p for p in self.policies if p.id == policy_id), None)


def children(step: PlanStep) -> list[PlanStep]:
    """Every step directly inside a step, in order (map template included)."""
    match step:
        case ParallelStep() | LoopStep():
            return list(step.steps)
        case MapStep():
            return [step.step]
        case ConditionalStep():
            return [s for b in step.branches for s in b.steps] + list(step.elseSteps)
        case PolicyGateStep():
            return list(step.elseSteps)
        case RunStep() | ApprovalGateStep():
            return []
        case _:
            assert_never(step)


def may_wait_for_approval(step: PlanStep) -> bool:
    """Whether this step itself (not what it holds) may wait for people to decide."""
    match step:
        case ApprovalGateStep():
            return True
        case PolicyGateStep():
            return step.failureAction == "requestOverride"
        case RunStep() | ParallelStep() | MapStep() | LoopStep() | ConditionalStep():
            return False
        case _:
            assert_never(step)


def walk(steps: tuple[PlanStep, ...] | list[PlanStep]) -> list[PlanStep]:
    """All steps of a tree, depth first, parents before children."""
    out: list[PlanStep] = []
    stack = list(reversed(steps))
    while stack:
        step = stack.pop()
        out.append(step)
        stack.extend(reversed(children(step)))
    return out


for _model in (ParallelStep, MapStep, LoopStep, BranchSpec, ConditionalStep, PolicyGateStep, Plan):
    _model.model_rebuild()
