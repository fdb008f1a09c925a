"""Manifest models: what pack authors write (DESIGN.md section 2). Strict: an unknown key fails."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

API_VERSION = "stellaops.io/pack.v1"
KIND = "TaskPack"
STEP_ID_PATTERN = r"^[a-zA-Z0-9_-]+$"
# An egress allowlist entry: a host name (optionally `*.`-prefixed), an IPv4 address or a
# bracketed IPv6 address, with an optional port.
EGRESS_ENTRY_PATTERN = (
    r"^(\*\.)?([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)*[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}"
    r"[a-zA-Z0-9])?\.?(:[0-9]{1,5})?$|^\[[0-9a-fA-F:.]+\](:[0-9]{1,5})?$"
)
STEP_KIND_KEYS = ("run", "parallel", "map", "loop", "conditional", "gate")

InputType = Literal["string", "number", "integer", "boolean", "object", "array"]
Condition = str | bool


def range_count(start: int, end: int, step: int) -> int:
    """len(range(start, end, step)), without building it (and without its overflow past
    sys.maxsize)."""
    return max(0, (end - start + step - (1 if step > 0 else -1)) // step)


class Strict(BaseModel):
    # Attribute docstrings become the JSON Schema's descriptions (compiler/schema.py), which
    # editors show as hover text beside each key.
    model_config = ConfigDict(extra="forbid", populate_by_name=False, use_attribute_docstrings=True)


def _text(value: Any) -> Any:
    # YAML reads `version: 1.0` as a number; authors mean the text they typed.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


class Metadata(Strict):
    name: str = Field(min_length=1, max_length=200)
    """The pack's name: runs are listed and published by it."""
    version: str = Field(min_length=1, max_length=100)
    """The pack's version; a number is read as the text written (1.0 is the text 1.0)."""
    description: str | None = None
    """What the pack does, for people."""
    tags: list[str] = Field(default_factory=list)
    """Free-form labels."""
    tenantVisibility: list[str] | None = None
    maintainers: list[dict[str, Any] | str] = Field(default_factory=list)
    license: str | None = None

    _version_text = field_validator("version", mode="before")(_text)

    @field_validator("name")
    @classmethod
    def _listable(cls, name: str) -> str:
        # Runs are listed by pack name in a Temporal visibility query, whose string literals
        # cannot carry these reliably (quotes at either end are trimmed, backslashes doubled).
        bad = sorted({c for c in name if c in "'\"\\" or ord(c) < 0x20 or ord(c) == 0x7F})
        if bad:
            raise ValueError(
                "a pack name may not hold quotes, backslashes or control characters "
                f"(found {', '.join(repr(c) for c in bad)})"
            )
        return name


class InputDef(Strict):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")
    """The input's name: `{{ inputs.NAME }}` in expressions."""
    type: InputType = "string"
    """The value's JSON type (default string); `integer` accepts 3 and 3.0."""
    required: bool = False
    """A run without it is refused (unless it has a default)."""
    default: Any = None
    """The value when a run gives none; checked like a given value."""
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    """A JSON Schema (draft 2020-12) the value must also satisfy."""


class SecretDef(Strict):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """Used only as `{{ secrets.NAME }}`, alone, in a run step's `with`; the worker fills it in."""
    description: str | None = None


class QuorumGroup(Strict):
    """Seats of an approval that only holders of one grant can fill, each a distinct person."""

    grant: str = Field(min_length=1, max_length=200)
    """The grant a person must hold to fill these seats."""
    requiredApprovals: int = Field(default=1, ge=1, le=100)
    """How many distinct holders of the grant must approve."""


class Approval(Strict):
    id: str = Field(pattern=STEP_ID_PATTERN)
    """The approval's id, named by approval gates and by policy gates' `approvalId`."""
    grants: list[str] = Field(default_factory=list)
    """Grants every decider must hold, besides the operator scope."""
    requiredApprovals: int = Field(default=1, ge=1, le=100)
    """Distinct people who must approve (1..100; default 1, or the quorum's seats)."""
    expiresAfterSeconds: int | None = Field(default=None, ge=1)
    """A deadline after the gate opens; then `onExpiry` decides."""
    onExpiry: Literal["reject", "approve"] = "reject"
    """What the deadline decides: reject (default) or approve."""
    message: str | None = None
    """Shown to the people asked to decide."""
    allowRequester: bool = False
    """Whether whoever started the run may decide it (default false: someone else must look)."""
    quorum: list[QuorumGroup] = Field(default_factory=list, max_length=20)
    """Seats only holders of a grant can fill, each a distinct person."""


class Policy(Strict):
    id: str = Field(pattern=STEP_ID_PATTERN)
    """The policy's id, named by policy gates."""
    version: str = "1"
    condition: Condition
    """An expression (or true/false) evaluated when a gate reaches it: true passes."""
    description: str | None = None

    _version_text = field_validator("version", mode="before")(_text)


class FailurePolicy(Strict):
    maxAttempts: int = Field(default=1, ge=1, le=100)
    """Attempts of each run step, unless the step has `retries` (1..100)."""
    backoffSeconds: int = Field(default=0, ge=0, le=86400)
    """Wait between attempts, a durable timer (0..86400)."""
    continueOnError: bool = False
    """The default of every step's `continueOnError`."""


class Sandbox(Strict):
    """Bounds past which a value is a mistake on any host; operators set tighter ceilings."""

    mode: Literal["sealed", "open"] = "sealed"
    """sealed (default): no network but the allowlist; open: the worker's network, where the
    operator allows it."""
    egressAllowlist: list[Annotated[str, Field(pattern=EGRESS_ENTRY_PATTERN)]] = Field(
        default_factory=list, max_length=256
    )
    """Hosts (`host`, `host:port`, `*.domain`) a sealed step may reach, through the worker's
    proxy."""
    cpuLimitMillicores: int = Field(default=1000, ge=1, le=1_024_000)
    """CPU share of all of a step's processes together (1000 = one core)."""
    memoryLimitMiB: int = Field(default=512, ge=1, le=16 * 1024 * 1024)
    """Memory of all of a step's processes together; past it the step fails with memory-limit."""
    quotaSeconds: int = Field(default=300, ge=1, le=30 * 86400)
    """CPU time of all of a step's processes together; past it the step fails with
    cpu-time-limit."""


class Slo(Strict):
    runP95Seconds: int | None = Field(default=None, ge=0)
    approvalP95Seconds: int | None = Field(default=None, ge=0)
    maxQueueDepth: int | None = Field(default=None, ge=0)


class Output(Strict):
    name: str = Field(pattern=STEP_ID_PATTERN)
    """The output's name (an artifact of the run)."""
    type: Literal["file", "object"]
    """file: a file of the workspace; object: an expression's value."""
    path: str | None = None
    """For a file output: its path in the run's workspace (relative, no `..`)."""
    expression: str | None = None
    """For an object output: the expression whose value it holds."""

    @model_validator(mode="after")
    def _needs_source(self) -> Output:
        if self.type == "file" and not self.path:
            raise ValueError("a file output needs `path`")
        if self.type == "object" and not self.expression:
            raise ValueError("an object output needs `expression`")
        return self


class Retries(Strict):
    maxAttempts: int = Field(default=1, ge=1, le=100)
    backoffSeconds: int = Field(default=0, ge=0, le=86400)


class RunBody(Strict):
    uses: str = Field(pattern=r"^(builtin|custom):[A-Za-z0-9_.-]+$")
    """The executor: `builtin:NAME` or `custom:NAME` (docs/executors.md)."""
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    """The executor's parameters; values may hold expressions (`{{ inputs.x }}`)."""
    timeoutSeconds: int | None = Field(default=None, ge=1, le=7 * 86400)
    """Wall time; past it the step is killed and fails with timeout."""
    retries: Retries | None = None
    """This step's attempts and backoff, instead of `spec.failure`'s."""


class ParallelBody(Strict):
    steps: list[Step] = Field(min_length=1)
    """Steps run side by side."""
    maxParallel: int | None = Field(default=None, ge=1)
    """At most this many at once (default: all)."""
    continueOnError: bool | None = None


def _items_form(value: Any) -> str | None:
    """Which form a map's `items` takes, so a mistake is reported against that form alone (not
    as "not a string, not a list" beside the real error); None for none of them."""
    if isinstance(value, str):
        return "expression"
    if isinstance(value, dict):
        return "source"
    if isinstance(value, list):
        return "list"
    return None


class MapBody(Strict):
    items: Annotated[
        Annotated[str, Tag("expression")]
        | Annotated[list[Any], Tag("list")]
        | Annotated[ItemsSource, Tag("source")],
        Discriminator(
            _items_form,
            custom_error_type="items_form",
            custom_error_message="items must be an expression (a string), a list, or exactly one "
            "of `expression`, `range` or `static`",
        ),
    ]
    """The items: an expression, a literal list, or as a loop's: exactly one of `expression`,
    `range` (integers counted without any input: a million items need no million-item input)
    or `static`."""
    step: Step
    """The template step, run once per item (`{{ item }}`, `{{ index }}`)."""
    maxParallel: int | None = Field(default=None, ge=1)
    continueOnError: bool | None = None


class RangeSpec(Strict):
    """Integers from `start` up to (or down to, with a negative `step`) `end`, which is left out."""

    start: int = 0
    """The first item (default 0)."""
    end: int
    """Where counting stops: `end` itself is not an item."""
    step: int = 1
    """The distance between items, not 0 (default 1; negative counts down)."""

    @property
    def count(self) -> int:
        """How many items the range has (0 when `end` lies the wrong way)."""
        return range_count(self.start, self.end, self.step)

    @field_validator("step")
    @classmethod
    def _nonzero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("range step must not be 0")
        return value


class ItemsSource(Strict):
    """Where a loop's or a map's items come from: exactly one of the three."""

    expression: str | None = None
    """An expression whose value is the list (`{{ inputs.hosts }}`)."""
    range: RangeSpec | None = None
    """Integers counted from `start` to `end` (excluded) by `step`."""
    static: list[Any] | None = None
    """A literal list."""

    @model_validator(mode="after")
    def _exactly_one(self) -> ItemsSource:
        given = [k for k in ("expression", "range", "static") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("items need exactly one of `expression`, `range` or `static`")
        return self


LoopItems = ItemsSource


class LoopBody(Strict):
    items: ItemsSource
    """Exactly one of `expression`, `range` or `static`."""
    iterator: str = Field(default="item", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """The name the current item goes by in the body's expressions (default item)."""
    index: str = Field(default="index", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    maxIterations: int = Field(default=1000, ge=1, le=10000)
    """A run with more items fails (1..10000, default 1000)."""
    aggregation: Literal["collect", "merge", "last", "first", "none"] = "collect"
    """How the iterations' outputs make the loop's: collect (default), merge, last, first, none."""
    continueOnError: bool | None = None
    steps: list[Step] = Field(min_length=1)
    """The body, run in sequence for each item."""


class Branch(Strict):
    condition: Condition
    """An expression (or true/false): the first branch that holds runs."""
    steps: list[Step] = Field(default_factory=list)


class ConditionalBody(Strict):
    branches: list[Branch] = Field(min_length=1)
    """Tried in order; the first whose condition holds runs."""
    else_: list[Step] = Field(default_factory=list, alias="else")
    """Run when no branch holds."""
    outputUnion: bool = False


class ApprovalGate(Strict):
    id: str
    """The approval (in `spec.approvals`) this gate waits for."""
    message: str | None = None


class PolicyGate(Strict):
    policy: str
    """The policy (in `spec.policies`) to evaluate."""
    version: str | None = None
    failureAction: Literal["abort", "warn", "requestOverride", "branch"] = "abort"
    """When the policy fails: abort (default), warn, requestOverride (an approval), branch (run
    `else`)."""
    retryCount: int = Field(default=0, ge=0, le=100)
    approvalId: str | None = None
    """With requestOverride: the approval that can let the run go on."""
    else_: list[Step] = Field(default_factory=list, alias="else")
    """With branch: the steps run when the policy fails."""

    _version_text = field_validator("version", mode="before")(_text)


class GateBody(Strict):
    approval: ApprovalGate | None = None
    policy: PolicyGate | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> GateBody:
        if (self.approval is None) == (self.policy is None):
            raise ValueError("a gate needs exactly one of `approval` or `policy`")
        return self


class Step(Strict):
    id: str = Field(pattern=STEP_ID_PATTERN, max_length=200)
    """The step's id, unique in the pack: `{{ steps.ID.outputs.x }}` in later steps."""
    when: Condition | None = None
    """An expression (or true/false): when false, the step is skipped."""
    description: str | None = None
    continueOnError: bool | None = None
    """When this step fails, the run goes on (default: `spec.failure.continueOnError`)."""
    run: RunBody | None = None
    """Call an executor."""
    parallel: ParallelBody | None = None
    """Run steps side by side."""
    map: MapBody | None = None
    """Run a template step once per item."""
    loop: LoopBody | None = None
    """Run a body of steps per item, in sequence."""
    conditional: ConditionalBody | None = None
    """Run the first branch whose condition holds."""
    gate: GateBody | None = None
    """Wait for people (approval) or check a policy."""

    @model_validator(mode="before")
    @classmethod
    def _exactly_one_kind(cls, data: Any) -> Any:
        if isinstance(data, dict):
            # `gate: null` is no gate: counted, it passed here and left a step of no kind.
            kinds = [k for k in STEP_KIND_KEYS if data.get(k) is not None]
            if len(kinds) != 1:
                found = ", ".join(kinds) if kinds else "none"
                raise ValueError(
                    f"a step needs exactly one of {', '.join(STEP_KIND_KEYS)} (found {found})"
                )
        return data

    @property
    def kind_key(self) -> str:
        return next(k for k in STEP_KIND_KEYS if getattr(self, k) is not None)


class Spec(Strict):
    inputs: list[InputDef] = Field(default_factory=list)
    """Values a run gives (`{{ inputs.NAME }}`)."""
    secrets: list[SecretDef] = Field(default_factory=list)
    """Secrets the worker fills in for run steps."""
    approvals: list[Approval] = Field(default_factory=list)
    """Approvals that gates wait for."""
    policies: list[Policy] = Field(default_factory=list)
    """Policies that gates check."""
    failure: FailurePolicy = Field(default_factory=FailurePolicy)
    """Attempts, backoff and continueOnError for every run step."""
    sandbox: Sandbox = Field(default_factory=Sandbox)
    """Network and resource limits of every step's commands."""
    slo: Slo | None = None
    steps: list[Step] = Field(min_length=1)
    """What the pack does, in order."""
    outputs: list[Output] = Field(default_factory=list)
    """What a run keeps: files of its workspace, values of expressions."""


class Manifest(Strict):
    """A whole task pack as written."""

    apiVersion: Literal["stellaops.io/pack.v1"]
    """Exactly stellaops.io/pack.v1."""
    kind: Literal["TaskPack"]
    """Exactly TaskPack."""
    metadata: Metadata
    spec: Spec


for _model in (ParallelBody, MapBody, LoopBody, Branch, ConditionalBody, PolicyGate, Step, Spec):
    _model.model_rebuild()
