"""Run-state models: the workflow's input, its signals and update, and what its queries return.

The workflow writes them and the API reads them; they travel in histories, so fields are only
ever added, with defaults.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from compiler.plan import FailurePolicy, Plan, PlanStep
from workflows.contract.activities import ArtifactRecord

RunStatus = Literal["pending", "running", "awaiting-approval", "succeeded", "failed", "cancelled"]
StepStatus = Literal["Pending", "Running", "Succeeded", "Failed", "Skipped"]
Decision = Literal["approved", "rejected", "expired"]
Via = Literal["rest", "signal", "link"]
ApprovalStatus = Literal["waiting", "pending", "approved", "rejected", "expired", "cancelled"]
LogLevel = Literal["debug", "info", "warn", "error"]
TERMINAL_RUN_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
FINAL_STATE_STEPS = 1000
"""Steps a run's result carries (about 200 KB at most): well below Temporal's payload warning."""
MEMO_STATE_BYTES = 64 * 1024
"""The most a cancelled run's final state in its memo may take, serialized (names.MEMO_FINAL_STATE):
the memo travels with every describe and every listing page, so it holds a prefix of the steps."""


class Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    @model_serializer(mode="wrap")
    def _without_nulls(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Absent beats null on the wire: a run's state with thousands of steps stays small.
        data = handler(self)
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


class StepState(Model):
    """One step of a run, as the contract's RunStateStep plus where it sits in the tree."""

    stepId: str
    kind: str
    enabled: bool = True
    continueOnError: bool = False
    maxParallel: int | None = None
    approvalId: str | None = None
    gateMessage: str | None = None
    status: StepStatus = "Pending"
    attempts: int = 0
    lastTransitionAt: str | None = None
    nextAttemptAt: str | None = None
    statusReason: str | None = None
    parentId: str | None = None
    templateId: str | None = None
    outputs: dict[str, Any] = Field(default_factory=dict)


class ApprovalDecisionRecord(Model):
    actorId: str
    """The identity the decision is counted for: a token's subject, or a link's own identity."""
    decision: Decision
    summary: str | None = None
    decidedAt: str
    tokenId: str | None = None
    """The signed approval link the decision came through, if any (a link is single use)."""
    via: Via | None = None
    grants: list[str] = Field(default_factory=list)
    """The quorum grants the decider held: which seats they could fill."""
    seat: str | None = None
    """The quorum grant whose seat this approval fills (None: an open seat). Seats are matched
    anew at each vote, so an earlier voter may move to make room for a later one."""
    statedActorId: str | None = None
    """What a link user called themselves: kept as a comment, never counted."""


class QuorumSeats(Model):
    grant: str
    requiredApprovals: int = 1


class ApprovalState(Model):
    approvalId: str
    stepId: str | None = None
    status: ApprovalStatus = "waiting"
    grants: list[str] = Field(default_factory=list)
    requiredApprovals: int = 1
    message: str | None = None
    requestedAt: str | None = None
    expiresAt: str | None = None
    decisions: list[ApprovalDecisionRecord] = Field(default_factory=list)
    allowRequester: bool | None = None
    quorum: list[QuorumSeats] = Field(default_factory=list)
    missing: list[str] = Field(default_factory=list)
    """What the approval still needs (`1 holder of security.approve`) while it is open."""


class LogEntry(Model):
    sequence: int
    timestamp: str
    level: LogLevel = "info"
    eventType: str
    message: str
    stepId: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    hash: str | None = None
    """Chain hash over the previous entry's hash and this entry (contract.log_chain)."""


class WebhookRef(Model):
    """A tenant's webhook as a run sees it: its secret only as ciphertext (contract.signing)."""

    id: str
    url: str
    events: list[str] = Field(default_factory=list)
    secretCiphertext: str


class ReusedStep(Model):
    """A step a redrive does not run again: it succeeded in the run redriven, with these outputs."""

    outputs: dict[str, Any] = Field(default_factory=dict)
    attempts: int = 1


class Redrive(Model):
    """What a redrive carries over from the run it redrives (set by the API, never by authors)."""

    of: str
    """The run redriven."""
    reuse: dict[str, ReusedStep] = Field(default_factory=dict)
    """By runtime step id: leaf steps (run steps, and gates when the planHash is unchanged)."""
    approvals: list[ApprovalState] = Field(default_factory=list)
    """Approvals already decided, carried over only when the planHash is unchanged."""


class RunMeta(Model):
    """Who started a run and how it should behave; set by the API from its settings."""

    runId: str
    tenant: str
    actor: str | None = None
    requestedAt: str
    heartbeatTimeoutSeconds: int = 20
    activityAttempts: int = 5
    """Temporal's own retries of one step attempt, for lost workers and timeouts."""
    searchAttributes: bool = True
    continueAsNewAfterEvents: int | None = None
    """Continue-as-new past this history length even before Temporal suggests it (for tests)."""
    logsKeptInRun: int = 1000
    """Past this many log entries in the workflow, older ones are paged out to the artifact store
    at the next step boundary (and all of them before continuing as new)."""
    webhooks: list[WebhookRef] = Field(default_factory=list)
    """The tenant's webhooks when the run started; each gets the events it asked for."""
    packDigest: str | None = None
    """`sha256:` digest of the registered pack version the run was started from, if any."""
    redrive: Redrive | None = None


class ScheduledStart(Model):
    """What a schedule's firing starts: a PackRun of this plan, with `meta` as the template of
    each run's metadata (its runId and requestedAt are the firing's)."""

    scheduleId: str
    plan: Plan
    planHash: str
    meta: RunMeta


class PackRunInput(Model):
    """Start input: the compiled plan and the run's metadata. Never secrets."""

    plan: Plan
    planHash: str
    meta: RunMeta
    carried: CarriedState | None = None


class StepSegment(Model):
    """Finished iterations `first..last` of a loop, their step states (`count`, the iterations'
    whole subtrees, in tree order) paged out of the run to the artifact store at `storedPath`."""

    loopId: str
    first: int
    last: int
    count: int
    storedPath: str


class PagedSteps(Model):
    """Steps of a `state` page that the run paged out: lines `skip..skip+take` of `storedPath`
    (one StepState each) go at index `at` of the page's `steps`, before the step there.
    `withOutputs`: the page was asked with outputs (else they are left out, as the run does)."""

    at: int
    storedPath: str
    skip: int
    take: int
    withOutputs: bool = False


class RunStateSnapshot(Model):
    """What the `state` query returns: the contract's run state plus the run's status."""

    runId: str
    tenant: str
    pack: str
    packVersion: str
    planHash: str
    status: RunStatus
    failurePolicy: FailurePolicy
    createdAt: str
    updatedAt: str
    steps: list[StepState] = Field(default_factory=list)
    approvals: list[ApprovalState] = Field(default_factory=list)
    outputs: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    totalSteps: int = 0
    """All steps of the run; `steps` holds the page the query asked for."""
    redriveOf: str | None = None
    packDigest: str | None = None
    logChainHead: str | None = None
    """The hash of the last log entry: commits to the whole log (contract.log_chain)."""
    logEntries: int = 0
    pagedSteps: list[PagedSteps] = Field(default_factory=list)
    """Where `steps` has steps the run paged out (finished loop iterations of a long loop): the
    API fills them in from the artifact store before anyone sees the page."""


class RunResult(Model):
    """What a PackRun returns when it ends."""

    status: RunStatus
    error: str | None = None
    outputs: dict[str, Any] = Field(default_factory=dict)
    state: RunStateSnapshot | None = None
    """The final state with the first `FINAL_STATE_STEPS` steps, so the API reads a finished run
    from the server without a worker replaying its history; later pages come from the query."""


def bounded_state(
    state: RunStateSnapshot, limit: int = MEMO_STATE_BYTES
) -> RunStateSnapshot | None:
    """`state` with only its first steps that fit in `limit` bytes of JSON (`totalSteps` stays
    the run's true count, so a reader knows which pages it does not hold); None when even no
    steps do not fit (outputs or approvals that large)."""
    used = len(state.model_copy(update={"steps": []}).model_dump_json())
    if used > limit:
        return None
    kept = 0
    for step in state.steps:
        used += len(step.model_dump_json()) + 1  # the comma between steps
        if used > limit:
            break
        kept += 1
    if kept == len(state.steps):
        return state
    # Paged-out steps placed past the kept ones would land out of place.
    paged = [ref for ref in state.pagedSteps if ref.at < kept]
    return state.model_copy(update={"steps": state.steps[:kept], "pagedSteps": paged})


class ChunkInput(Model):
    """One slice of a large map, run as a child workflow so no history grows with the items."""

    plan: Plan
    planHash: str
    meta: RunMeta
    mapStepId: str
    template: PlanStep
    startIndex: int
    items: list[Any]
    vars: dict[str, Any] = Field(default_factory=dict)
    itemsFolder: str | None = None
    """Set when the items are by reference: the chunk loads chunk `chunkNumber`'s file from this
    folder of the artifact store (and `items` is empty), so the parent's history never holds them
    a second time."""
    chunkNumber: int = 0
    itemsRange: tuple[int, int, int] | None = None
    """Set when the map's items are a range (start, end, step): the chunk's items are the
    `rangeChunkSize` of them from `startIndex`, computed here, neither stored nor sent."""
    rangeChunkSize: int = 0
    visibleSteps: dict[str, Any] = Field(default_factory=dict)
    maxParallel: int = 1
    continueOnError: bool = False


class MapGroupInput(Model):
    """Chunks `chunk.chunkNumber ..` (`chunks` of them) of one very large map, started by a
    PackRunMapGroup for its parent (the run, or a group above) so that no workflow starts more
    than `MAP_CHILDREN_PER_WORKFLOW` children. `chunk` is the input each chunk gets, less its
    number and first index; items are by reference (`chunk.itemsFolder`)."""

    chunk: ChunkInput
    chunks: int
    chunkSize: int
    itemCount: int
    """Items of the whole map: the last chunk of the map may be short."""
    chunksAtOnce: int = 1
    resultBytes: int = 2 * 1024 * 1024
    """What this group's result may hold (outputs, states of items that did not plainly
    succeed, their log entries): its share of the map's `MAP_RESULTS_LIMIT_BYTES`."""


class ChunkResult(Model):
    steps: list[StepState]
    logs: list[LogEntry]
    outputs: list[Any]
    failed: bool
    artifacts: list[ArtifactRecord] = Field(default_factory=list)
    succeeded: list[str] = Field(default_factory=list)
    """Steps that succeeded at their first attempt with nothing else to say (no outputs, no
    reason), by id alone: most of a large map's items, so the parent's history does not hold a
    whole state per item. Their `lastTransitionAt` becomes `succeededAt`, the chunk's end."""
    succeededAt: str | None = None
    succeededItems: list[tuple[int, int]] = Field(default_factory=list)
    """Items (first, last, inclusive ranges of map indexes) whose every step succeeded at its
    first attempt with nothing to say but the iteration's own outputs (in `outputs`): named by
    range, so the parent's history holds a few numbers per chunk rather than an id per item."""
    skippedItems: list[tuple[int, int]] = Field(default_factory=list)
    """A group's items (ranges, as `succeededItems`) it never started because an item before
    them failed: the parent skips them (`previous-step-failed`)."""
    skippedByCondition: str | None = None
    """A group's items skipped because their `when` was false, every step of each: a bitmap by
    map index (bit i of byte i // 8, least significant first), zlib-compressed and base64, so a
    filter that skips every other item of a million costs kilobytes, not a state per step."""
    outputsAt: list[tuple[int, Any]] | None = None
    """A group's items' outputs, sparsely: (map index, outputs) for each item whose outputs are
    not `{}`, every other item's being `{}`; `outputs` is then empty. A million `builtin:noop`
    items hand back nothing."""


class StepProgress(Model):
    """Where a loop or conditional that is still running stands, so a run that continued as new
    inside it picks up there: the plan is walked again, finished steps are not run again."""

    nextIteration: int = 0
    """A loop: its first iteration not finished (the one under way, if any)."""
    ok: bool = True
    """A loop: no iteration failed so far (one may, under continueOnError)."""
    outputs: list[dict[str, Any]] = Field(default_factory=list)
    """A loop: finished iterations' outputs, reduced to what its aggregation needs (`collect`
    keeps each; `merge` one merged; `first`/`last` one)."""
    branch: int | None = None
    """A conditional: the branch taken (None: `else`), never evaluated again."""
    iterations: int = 0
    """A loop: how many iterations it registered. Those after `nextIteration` have not begun:
    their states are left out of the carried state and registered again from the plan."""


class CarriedState(Model):
    """What a run carries across continue-as-new. Log entries older than `logsPagedThrough` are
    in the artifact store (`logSegments`), not here. `progress`: the loops and conditionals
    under way when the run continued as new at a boundary inside them (empty: it did so between
    top-level steps)."""

    status: RunStatus
    createdAt: str
    updatedAt: str
    nextStepIndex: int
    steps: list[StepState]
    approvals: list[ApprovalState]
    logs: list[LogEntry]
    logSegments: list[LogSegment] = Field(default_factory=list)
    logsPagedThrough: int = 0
    logsPagedHead: str | None = None
    artifacts: list[ArtifactRecord]
    cancelRequested: bool = False
    progress: dict[str, StepProgress] = Field(default_factory=dict)
    stepSegments: list[StepSegment] = Field(default_factory=list)
    """Finished loop iterations paged out to the artifact store: their states are not here."""


class ApprovalSignal(Model):
    """Payload of the `approval` signal and the `decide_approval` update."""

    approvalId: str
    decision: Decision
    planHash: str
    actorId: str | None = None
    summary: str | None = None
    tokenId: str | None = None
    """Set when the decision comes through a signed approval link: its `token_id`."""
    via: Via | None = None
    """How the decision arrived; the `approval` signal always records `signal`, whatever it says."""
    grants: list[str] = Field(default_factory=list)
    """Quorum grants the decider holds, as the API found them in the token (none for links)."""
    statedActorId: str | None = None


class ApprovalOutcome(Model):
    """What `decide_approval` returns: the contract's ApprovalDecisionResponse plus the tally."""

    status: Decision
    resumed: bool
    approvals: int = 0
    requiredApprovals: int = 1
    missing: list[str] = Field(default_factory=list)


class RefusedDecision(Model):
    """A decision the API refused itself (grants, scopes, a link's expiry), for the run's log."""

    approvalId: str
    actorId: str
    decision: str
    code: str
    reason: str
    via: Via
    statedActorId: str | None = None


class CancelSignal(Model):
    actorId: str | None = None
    reason: str | None = None
    temporalCancelFollows: bool = False
    """The sender requests Temporal's own cancellation right after this signal (the API does):
    the run waits a moment for it, so its workflow ends as Canceled, not Completed. A signal
    alone cannot end a workflow as Canceled."""


class StateQuery(Model):
    """Arguments of the `state` query. Large runs are read a page of steps at a time."""

    includeOutputs: bool = False
    stepsOffset: int = 0
    stepsLimit: int | None = 2000


class LogsQuery(Model):
    after: int = 0
    limit: int = 1000


class LogSegment(Model):
    """Log entries `first..last` of a run, paged out of the workflow to the artifact store (one
    NDJSON file, `storedPath` relative to the store's root), so carried state stays bounded."""

    first: int
    last: int
    storedPath: str


class LogsPage(Model):
    entries: list[LogEntry]
    nextSequence: int
    finished: bool
    segments: list[LogSegment] = Field(default_factory=list)
    """When `after` is older than what the run keeps: the segments holding the next entries
    (`entries` is empty then); the API reads them from the artifact store."""


# Completed here, where every name they use is defined: left to pydantic's rebuild on first use,
# a model looks its names up in the module as the importing code's sys.modules has it, which a
# workflow sandbox that never imported this module does not.
CarriedState.model_rebuild()
PackRunInput.model_rebuild()
ChunkInput.model_rebuild()
