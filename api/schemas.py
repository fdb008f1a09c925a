"""API schemas: the contract's shapes, and the mapping from plan and run state to them.

Request models forbid unknown fields (a typo is a 400, not silently ignored). Response models
follow `contract/taskrunner-openapi.yaml`; optional fields are left out rather than sent as null
(routes set `response_model_exclude_none`). A few extra fields (a run's `status`, `pack`,
`approvals`, ...) are added where a caller needs them; the contract's objects allow that.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from compiler.plan import FailurePolicy
from compiler.simulation import ApprovalInfo, SimulationOutput, SimulationStep
from workflows.contract.activities import ArtifactRecord
from workflows.contract.state import (
    ApprovalOutcome,
    ApprovalState,
    LogEntry,
    RunStateSnapshot,
    StepState,
)

Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
"""An RFC 3339 time (`workflows.contract.times.rfc3339`), as the contract types it."""

RUN_ID_PATTERN = r"^[a-zA-Z0-9_-]+$"
PLAN_HASH_PATTERN = r"^sha256:[a-f0-9]{64}$"
MAX_RUN_ID_LENGTH = 128

StepKind = Literal[
    "Run", "GateApproval", "GatePolicy", "Parallel", "Map", "Loop", "Conditional", "Unknown"
]
Decision = Literal["approved", "rejected", "expired"]
RunStatus = Literal["pending", "running", "awaiting-approval", "succeeded", "failed", "cancelled"]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Schema(BaseModel):
    model_config = ConfigDict(extra="ignore")


# ---------------------------------------------------------------- errors


class ErrorBody(Schema):
    code: str = Field(description="Machine-readable error code")
    message: str = Field(description="Human-readable error message")
    traceId: str | None = Field(default=None, description="Trace ID for debugging")


class ErrorEnvelope(Schema):
    error: ErrorBody


class PlanErrorItem(Schema):
    path: str = Field(description="JSON path to the error location")
    message: str
    # Not in the contract's item (whose objects allow more): where the node of `path` is in the
    # manifest's YAML, so an editor or a CI annotation can point at it.
    line: int | None = Field(
        default=None,
        ge=1,
        description="Line (1-based) of the node of `path` in the manifest's YAML; absent for "
        "an error not in the manifest's text (an input given with the request)",
    )
    column: int | None = Field(
        default=None, ge=1, description="Column (1-based) of the node of `path`, with `line`"
    )


class PlanErrorResponse(Schema):
    errors: list[PlanErrorItem]


# ---------------------------------------------------------------- simulations


class PackRef(Request):
    """A registered pack: `version` absent means its highest active version."""

    name: str = Field(min_length=1, max_length=200)
    version: str | None = Field(default=None, min_length=1, max_length=100)


class _ManifestOrPack(Request):
    @model_validator(mode="after")
    def _exactly_one(self) -> Any:
        manifest: str | None = getattr(self, "manifest", None)
        pack: PackRef | None = getattr(self, "pack", None)
        if (manifest is None) == (pack is None):
            raise ValueError("give exactly one of `manifest` and `pack`")
        return self


class SimulationRequest(_ManifestOrPack):
    manifest: str | None = Field(default=None, description="Task pack manifest in YAML format")
    pack: PackRef | None = Field(
        default=None, description="A registered pack instead of a manifest"
    )
    inputs: dict[str, Any] | None = Field(default=None, description="Input values for the pack")


class QuorumGroup(Schema):
    grant: str
    requiredApprovals: int


class SimulationResponse(Schema):
    planHash: str = Field(
        pattern=PLAN_HASH_PATTERN, description="SHA-256 hash of the execution plan"
    )
    failurePolicy: FailurePolicy
    steps: list[SimulationStep]
    outputs: list[SimulationOutput]
    hasPendingApprovals: bool = Field(description="Whether the plan contains approval gates")
    approvals: list[ApprovalInfo] = Field(
        default_factory=list,
        description="Each approval of the pack: who may decide it and what it needs",
    )
    historyEstimate: int | None = Field(
        default=None, description="Events the largest workflow history of the run would hold"
    )
    historyEvents: int | None = Field(
        default=None, description="Events of every workflow the run starts"
    )
    warnings: list[str] = Field(default_factory=list, description="What would go wrong at run time")


# ---------------------------------------------------------------- runs


class CreateRunRequest(_ManifestOrPack):
    runId: Annotated[str, Field(pattern=RUN_ID_PATTERN, max_length=MAX_RUN_ID_LENGTH)] | None = (
        Field(default=None, description="Optional custom run ID (auto-generated if not provided)")
    )
    manifest: str | None = Field(default=None, description="Task pack manifest in YAML format")
    pack: PackRef | None = Field(
        default=None, description="A registered pack (name, optional version) instead"
    )
    inputs: dict[str, Any] | None = Field(default=None, description="Input values for the pack")
    tenantId: str | None = Field(
        default=None, description="Tenant identifier (used when X-StellaOps-Tenant is absent)"
    )


class RunStateStep(Schema):
    stepId: str
    kind: StepKind
    enabled: bool
    continueOnError: bool
    maxParallel: int | None = None
    approvalId: str | None = None
    gateMessage: str | None = None
    status: Literal["Pending", "Running", "Succeeded", "Failed", "Skipped"]
    attempts: int
    lastTransitionAt: Timestamp | None = None
    nextAttemptAt: Timestamp | None = None
    statusReason: str | None = None
    parentId: str | None = Field(default=None, description="The step this one sits inside, if any")
    outputs: dict[str, Any] | None = Field(
        default=None,
        description="The step's outputs (a failed step's: what it had, e.g. `exitCode` and the "
        "last of `stderr`); only with `include=outputs`",
    )


class ApprovalDecisionRecord(Schema):
    actorId: str = Field(description="The identity the decision was counted for")
    decision: Decision
    summary: str | None = None
    decidedAt: Timestamp
    via: Literal["rest", "signal", "link"] | None = Field(
        default=None, description="How the decision arrived"
    )
    seat: str | None = Field(
        default=None, description="The quorum grant whose seat this approval fills, if any"
    )
    statedActorId: str | None = Field(
        default=None,
        description="A link user's own name for themselves: a comment, never the identity",
    )


class RunApproval(Schema):
    approvalId: str
    stepId: str | None = None
    status: Literal["waiting", "pending", "approved", "rejected", "expired", "cancelled"]
    grants: list[str]
    requiredApprovals: int
    allowRequester: bool | None = Field(
        default=None, description="Whether the run's requester may decide"
    )
    quorum: list[QuorumGroup] = Field(default_factory=list)
    missing: list[str] = Field(
        default_factory=list, description="What the gate still needs, e.g. `1 holder of X`"
    )
    message: str | None = None
    requestedAt: Timestamp | None = None
    expiresAt: Timestamp | None = None
    decisions: list[ApprovalDecisionRecord]


ActionName = Literal["approve", "reject", "cancel", "redrive"]


class AvailableAction(Schema):
    """One request the caller may send now, ready to send: method, URL, headers and body."""

    action: ActionName
    method: Literal["POST"] = "POST"
    href: str = Field(description="The URL to send it to")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Headers it needs besides the caller's own token"
    )
    body: dict[str, Any] | None = Field(
        default=None, description="The JSON body to send (fill in `summary` or `reason` if wanted)"
    )
    approvalId: str | None = Field(default=None, description="The gate it decides")
    gateMessage: str | None = None
    expiresAt: Timestamp | None = Field(
        default=None, description="When the gate stops taking votes"
    )


class RunStateResponse(Schema):
    runId: str
    planHash: str = Field(pattern=PLAN_HASH_PATTERN)
    failurePolicy: FailurePolicy
    createdAt: Timestamp
    updatedAt: Timestamp
    steps: list[RunStateStep]
    totalSteps: int = Field(
        description="Steps the run has; `steps` is the page asked for (stepsOffset, stepsLimit)"
    )
    status: RunStatus
    tenant: str
    pack: str
    packVersion: str
    approvals: list[RunApproval] = Field(
        default_factory=list, description="Each approval of the pack: who may decide, who did"
    )
    outputs: dict[str, Any] | None = None
    error: str | None = None
    logChainHead: str | None = Field(
        default=None,
        description="Hash of the last log entry; it commits to the whole log (see evidence)",
    )
    packDigest: str | None = Field(
        default=None, description="Digest of the registered pack version the run runs"
    )
    redriveOf: str | None = Field(default=None, description="The run this one redrives")
    redrives: list[str] | None = Field(default=None, description="Runs that redrove this one")
    availableActions: list[AvailableAction] | None = Field(
        default=None,
        description="What this caller may do next, ready to send: approve or reject an open gate "
        "(with the planHash to send), cancel, redrive; only what its scopes and grants allow",
    )


class CancelResponse(Schema):
    status: Literal["cancelled"] = "cancelled"


class RunSummary(Schema):
    runId: str
    pack: str = Field(description="The pack's name")
    status: RunStatus
    planHash: str
    createdAt: Timestamp
    closedAt: Timestamp | None = Field(default=None, description="When the run ended, if it has")
    packVersion: str | None = Field(default=None, description="The pack's version")
    packDigest: str | None = Field(
        default=None, description="Digest of the registered pack version, for registry runs"
    )
    redriveOf: str | None = Field(default=None, description="The run this one redrives")


class RunList(Schema):
    runs: list[RunSummary]
    nextPageToken: str | None = Field(
        default=None, description="Pass as `pageToken` for the next page; absent on the last"
    )


# ---------------------------------------------------------------- logs and artifacts


class RunLogEntry(Schema):
    sequence: int = Field(description="Position in the run's log, from 1; resume with ?after=")
    timestamp: Timestamp
    level: Literal["debug", "info", "warn", "error"]
    eventType: str
    message: str
    stepId: str | None = None
    metadata: dict[str, str] | None = None
    hash: str | None = Field(
        default=None,
        description="sha256 over the previous entry's hash and this entry's JCS form (RFC 8785)",
    )


class RunArtifact(ArtifactRecord):
    """The contract's RunArtifact: the run's own `ArtifactRecord`, as the `artifacts` query
    returns it (defined once, in the contract)."""

    capturedAt: Timestamp | None = None


# ---------------------------------------------------------------- approvals


class ApprovalDecisionRequest(Request):
    decision: Decision
    planHash: str = Field(
        pattern=PLAN_HASH_PATTERN,
        description="Plan hash to verify against (must match the run's plan)",
    )
    actorId: str | None = Field(
        default=None,
        max_length=256,
        description="Who decides: the token's subject (the default); another actor needs admin",
    )
    summary: str | None = Field(default=None, max_length=4000, description="Why")


class ApprovalLinkRequest(Request):
    decision: Literal["approved", "rejected"] | None = Field(
        default=None, description="If given, must be the link's own decision"
    )
    actorId: str | None = Field(
        default=None,
        max_length=256,
        description=(
            "A name the link user gives themselves, kept as a comment only: the vote counts for "
            "the identity the link was minted for"
        ),
    )
    summary: str | None = Field(default=None, max_length=4000, description="Why")


class ApprovalDecisionResponse(Schema):
    status: Decision
    resumed: bool = Field(
        description="Whether the run moved on past the gate (true once the approval is granted)"
    )
    approvals: int | None = Field(default=None, description="Approvals counted so far")
    requiredApprovals: int | None = None
    missing: list[str] = Field(
        default_factory=list, description="What the gate still needs, e.g. `1 holder of X`"
    )


# ---------------------------------------------------------------- webhooks

# What a webhook may subscribe to: the run log's event types (webhook.* excepted, which are
# never delivered).
WEBHOOK_EVENTS = (
    "run.created",
    "run.started",
    "run.completed",
    "run.failed",
    "run.cancel-requested",
    "run.cancelled",
    "step.started",
    "step.completed",
    "step.failed",
    "step.skipped",
    "step.retrying",
    "gate.awaiting",
    "gate.vote",
    "gate.approved",
    "gate.rejected",
    "gate.expired",
    "gate.cancelled",
    "gate.decision-refused",
    "policy.passed",
    "policy.failed",
    "artifact.captured",
    "artifact.failed",
)
WebhookEvent = Literal[WEBHOOK_EVENTS]  # type: ignore[valid-type]


class WebhookRequest(Request):
    url: Annotated[str, Field(min_length=1, max_length=2048)] = Field(
        description="Where deliveries are POSTed: an http or https URL"
    )
    events: list[WebhookEvent] = Field(
        min_length=1, max_length=len(WEBHOOK_EVENTS), description="Event types to deliver"
    )
    secret: str | None = Field(
        default=None,
        min_length=16,
        max_length=256,
        description=(
            "The signing secret, never shown again: best a Standard Webhooks secret (`whsec_` "
            "and the base64 of 24 to 64 random bytes); left out, the service makes one and "
            "returns it once. Any other text (16 to 256 characters) is still taken: its UTF-8 "
            "bytes are then the key"
        ),
    )


class Webhook(Schema):
    id: str
    url: str
    events: list[str]
    createdAt: Timestamp


class WebhookCreated(Webhook):
    secret: str | None = Field(
        default=None,
        description="The `whsec_` secret the service made (only when the request gave none): "
        "shown this once",
    )


class WebhookList(Schema):
    webhooks: list[Webhook]


# ---------------------------------------------------------------- metadata and health


class OpenApiMetadata(Schema):
    specUrl: str = Field(description="URL to fetch the full OpenAPI spec")
    version: str = Field(description="API version")
    buildVersion: str | None = Field(default=None, description="Build version identifier")
    etag: str = Field(description="ETag for caching")
    signature: str | None = Field(default=None, description="Signature for spec verification")


class QueueKindHealth(Schema):
    backlog: int = Field(description="Tasks waiting for a worker (Temporal's approximate count)")
    backlogAgeSeconds: float = Field(description="How long the oldest waiting task has waited")
    pollers: int = Field(description="Workers polling for these tasks recently")


class TaskQueueHealth(Schema):
    name: str
    workflowTasks: QueueKindHealth = Field(description="Runs waiting to be advanced")
    activityTasks: QueueKindHealth = Field(description="Steps waiting to be run")


class HealthStatus(Schema):
    status: Literal["ok", "ready"]
    taskQueue: TaskQueueHealth | None = Field(
        default=None, description="The runs' task queue (readiness only)"
    )
    warnings: list[str] | None = Field(
        default=None, description="What is wrong without making the API unready (no worker, say)"
    )


# ---------------------------------------------------------------- mapping at the edge


def run_state(snapshot: RunStateSnapshot) -> RunStateResponse:
    return RunStateResponse(
        runId=snapshot.runId,
        planHash=snapshot.planHash,
        failurePolicy=snapshot.failurePolicy,
        createdAt=snapshot.createdAt,
        updatedAt=snapshot.updatedAt,
        steps=[run_step(s) for s in snapshot.steps],
        totalSteps=snapshot.totalSteps,
        status=snapshot.status,
        tenant=snapshot.tenant,
        pack=snapshot.pack,
        packVersion=snapshot.packVersion,
        approvals=[RunApproval.model_validate(a.model_dump()) for a in snapshot.approvals],
        outputs=snapshot.outputs or None,
        error=snapshot.error,
        logChainHead=snapshot.logChainHead,
        packDigest=snapshot.packDigest,
        redriveOf=snapshot.redriveOf,
    )


def run_step(state: StepState) -> RunStateStep:
    # Outputs only when asked for (GET run's `include=outputs`); templateId is dropped.
    return RunStateStep.model_validate(state.model_dump(exclude={"outputs"}))


def log_entry(entry: LogEntry) -> RunLogEntry:
    return RunLogEntry.model_validate(entry.model_dump())


def approval_outcome(outcome: ApprovalOutcome) -> ApprovalDecisionResponse:
    return ApprovalDecisionResponse.model_validate(outcome.model_dump())


def find_approval(snapshot: RunStateSnapshot, approval_id: str) -> ApprovalState | None:
    return next((a for a in snapshot.approvals if a.approvalId == approval_id), None)


# ---------------------------------------------------------------- pack registry


class PublishPackRequest(Request):
    manifest: str = Field(description="Task pack manifest in YAML format")
    signature: dict[str, Any] | None = Field(
        default=None,
        description="DSSE envelope (payloadType application/vnd.stellaops.taskrunner.pack+yaml) "
        "whose payload is exactly the manifest, signed with Ed25519",
    )


class PackVersionRecord(Schema):
    name: str
    version: str
    digest: str = Field(description="sha256: and 64 hex digits of the manifest's bytes")
    publishedAt: Timestamp
    publishedBy: str | None = None
    status: Literal["active", "disabled"]
    signedBy: str | None = Field(default=None, description="Key id of the trusted signing key")


class PackVersionDetail(PackVersionRecord):
    manifest: str


class PackList(Schema):
    packs: list[PackVersionRecord]
    nextPageToken: str | None = None


# ---------------------------------------------------------------- redrive


class RedrivePack(Request):
    version: str = Field(min_length=1, max_length=100)


class RedriveRequest(Request):
    fromStep: str | None = Field(
        default=None, description="Top-level step to restart from (default: the first failed)"
    )
    inputs: dict[str, Any] | None = Field(
        default=None, description="Inputs to change (merged over the old run's)"
    )
    pack: RedrivePack | None = Field(default=None, description="Another version of the pack")
    runId: Annotated[str, Field(pattern=RUN_ID_PATTERN, max_length=MAX_RUN_ID_LENGTH)] | None = (
        Field(default=None, description="The new run's id (generated if absent)")
    )


class RedrivePreview(Schema):
    redriveOf: str
    restartFrom: str
    planHash: str
    planHashChanged: bool
    reusedSteps: list[str]
    rerunSteps: list[str]
    gatesLapsed: list[str] = Field(description="Gates passed before, decided again (plan changed)")
    approvalsCarried: list[str]


# ---------------------------------------------------------------- evidence


class DsseSignature(Schema):
    keyid: str
    sig: str = Field(
        description="base64 Ed25519 signature over the DSSE pre-authentication encoding"
    )


class DsseEnvelope(Schema):
    payloadType: Literal["application/vnd.in-toto+json"]
    payload: str = Field(description="base64 of the in-toto v1 Statement (JSON)")
    signatures: list[DsseSignature]


class EvidenceBundle(Schema):
    """A run's signed evidence: `taskrunner evidence verify` checks it."""

    mediaType: Literal["application/vnd.stellaops.taskrunner.evidence.v1+json"]
    dsseEnvelope: DsseEnvelope
    log: list[RunLogEntry] = Field(
        description="The run's log, each entry with its chain hash; the signed head is the last"
    )


# ---------------------------------------------------------------- schedules

SCHEDULE_ID_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,47}$"
OverlapPolicy = Literal[
    "skip", "bufferOne", "bufferAll", "cancelOther", "terminateOther", "allowAll"
]


class CreateScheduleRequest(Request):
    scheduleId: str = Field(
        pattern=SCHEDULE_ID_PATTERN,
        description="The schedule's id; each run it starts is `<scheduleId>-<UTC time>`",
    )
    pack: PackRef = Field(description="A registered pack (no version: the highest active now)")
    inputs: dict[str, Any] | None = Field(default=None, description="Input values of each run")
    cron: str = Field(
        min_length=1,
        max_length=200,
        description="Cron expression: 5 fields (minute..day of week), or 7 with seconds and year",
    )
    timezone: str = Field(default="UTC", max_length=64, description="IANA time zone of `cron`")
    overlapPolicy: OverlapPolicy = Field(
        default="skip", description="When a run is still going at the next firing"
    )
    catchupWindowSeconds: int = Field(
        default=60, ge=10, le=365 * 86400, description="Firings missed by at most this are run"
    )


class ScheduleAction(Schema):
    scheduledAt: Timestamp
    startedAt: Timestamp


class ScheduleResponse(Schema):
    scheduleId: str
    pack: str
    packVersion: str
    packDigest: str
    inputs: dict[str, Any]
    cron: str
    timezone: str
    overlapPolicy: str
    catchupWindowSeconds: int
    paused: bool
    note: str | None = None
    nextRunTimes: list[str] = Field(default_factory=list)
    recentActions: list[ScheduleAction] = Field(default_factory=list)
    createdAt: Timestamp
    createdBy: str | None = None


class ScheduleList(Schema):
    schedules: list[ScheduleResponse]


class SchedulePauseRequest(Request):
    note: str | None = Field(default=None, max_length=500, description="Why (shown in the Web UI)")
