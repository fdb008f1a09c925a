"""Manifest models: what pack authors write (DESIGN.md section 2). Strict: an unknown key fails."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=False)


def _text(value: Any) -> Any:
    # YAML reads `version: 1.0` as a number; authors mean the text they typed.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


class Metadata(Strict):
    name: str = Field(min_length=1, max_length=200)
    version: str = Field(min_length=1, max_length=100)
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
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
    type: InputType = "string"
    required: bool = False
    default: Any = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")


class SecretDef(Strict):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    description: str | None = None


class QuorumGroup(Strict):
    """Seats of an approval that only holders of one grant can fill, each a distinct person."""

    grant: str = Field(min_length=1, max_length=200)
    requiredApprovals: int = Field(default=1, ge=1, le=100)


class Approval(Strict):
    id: str = Field(pattern=STEP_ID_PATTERN)
    grants: list[str] = Field(default_factory=list)
    requiredApprovals: int = Field(default=1, ge=1, le=100)
    expiresAfterSeconds: int | None = Field(default=None, ge=1)
    onExpiry: Literal["reject", "approve"] = "reject"
    message: str | None = None
    allowRequester: bool = False
    quorum: list[QuorumGroup] = Field(default_factory=list, max_length=20)


class Policy(Strict):
    id: str = Field(pattern=STEP_ID_PATTERN)
    version: str = "1"
    condition: Condition
    description: str | None = None

    _version_text = field_validator("version", mode="before")(_text)


class FailurePolicy(Strict):
    maxAttempts: int = Field(default=1, ge=1, le=100)
    backoffSeconds: int = Field(default=0, ge=0, le=86400)
    continueOnError: bool = False


class Sandbox(Strict):
    """Bounds past which a value is a mistake on any host; operators set tighter ceilings."""

    mode: Literal["sealed", "open"] = "sealed"
    egressAllowlist: list[Annotated[str, Field(pattern=EGRESS_ENTRY_PATTERN)]] = Field(
        default_factory=list, max_length=256
    )
    cpuLimitMillicores: int = Field(default=1000, ge=1, le=1_024_000)
    memoryLimitMiB: int = Field(default=512, ge=1, le=16 * 1024 * 1024)
    quotaSeconds: int = Field(default=300, ge=1, le=30 * 86400)


class Slo(Strict):
    runP95Seconds: int | None = Field(default=None, ge=0)
    approvalP95Seconds: int | None = Field(default=None, ge=0)
    maxQueueDepth: int | None = Field(default=None, ge=0)


class Output(Strict):
    name: str = Field(pattern=STEP_ID_PATTERN)
    type: Literal["file", "object"]
    path: str | None = None
    expression: str | None = None

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
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    timeoutSeconds: int | None = Field(default=None, ge=1, le=7 * 86400)
    retries: Retries | None = None


class ParallelBody(Strict):
    steps: list[Step] = Field(min_length=1)
    maxParallel: int | None = Field(default=None, ge=1)
    continueOnError: bool | None = None


class MapBody(Strict):
    items: str | list[Any]
    step: Step
    maxParallel: int | None = Field(default=None, ge=1)
    continueOnError: bool | None = None


class RangeSpec(Strict):
    start: int = 0
    end: int
    step: int = 1

    @field_validator("step")
    @classmethod
    def _nonzero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("range step must not be 0")
        return value


class LoopItems(Strict):
    expression: str | None = None
    range: RangeSpec | None = None
    static: list[Any] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> LoopItems:
        given = [k for k in ("expression", "range", "static") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("loop items need exactly one of `expression`, `range` or `static`")
        return self


class LoopBody(Strict):
    items: LoopItems
    iterator: str = Field(default="item", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    index: str = Field(default="index", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    maxIterations: int = Field(default=1000, ge=1, le=10000)
    aggregation: Literal["collect", "merge", "last", "first", "none"] = "collect"
    continueOnError: bool | None = None
    steps: list[Step] = Field(min_length=1)


class Branch(Strict):
    condition: Condition
    steps: list[Step] = Field(default_factory=list)


class ConditionalBody(Strict):
    branches: list[Branch] = Field(min_length=1)
    else_: list[Step] = Field(default_factory=list, alias="else")
    outputUnion: bool = False


class ApprovalGate(Strict):
    id: str
    message: str | None = None


class PolicyGate(Strict):
    policy: str
    version: str | None = None
    failureAction: Literal["abort", "warn", "requestOverride", "branch"] = "abort"
    retryCount: int = Field(default=0, ge=0, le=100)
    approvalId: str | None = None
    else_: list[Step] = Field(default_factory=list, alias="else")

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
    when: Condition | None = None
    description: str | None = None
    continueOnError: bool | None = None
    run: RunBody | None = None
    parallel: ParallelBody | None = None
    map: MapBody | None = None
    loop: LoopBody | None = None
    conditional: ConditionalBody | None = None
    gate: GateBody | None = None

    @model_validator(mode="before")
    @classmethod
    def _exactly_one_kind(cls, data: Any) -> Any:
        if isinstance(data, dict):
            kinds = [k for k in STEP_KIND_KEYS if k in data]
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
    secrets: list[SecretDef] = Field(default_factory=list)
    approvals: list[Approval] = Field(default_factory=list)
    policies: list[Policy] = Field(default_factory=list)
    failure: FailurePolicy = Field(default_factory=FailurePolicy)
    sandbox: Sandbox = Field(default_factory=Sandbox)
    slo: Slo | None = None
    steps: list[Step] = Field(min_length=1)
    outputs: list[Output] = Field(default_factory=list)


class Manifest(Strict):
    """A whole task pack as written."""

    apiVersion: Literal["stellaops.io/pack.v1"]
    kind: Literal["TaskPack"]
    metadata: Metadata
    spec: Spec


for _model in (ParallelBody, MapBody, LoopBody, Branch, ConditionalBody, PolicyGate, Step, Spec):
    _model.model_rebuild()
