"""What the workflow sends to activities and gets back: the wire shapes between the two rooms."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from compiler.plan import OutputSpec, Sandbox

RUN_STEP = "run_step"
EVALUATE_POLICY = "evaluate_policy"
CAPTURE_OUTPUTS = "capture_outputs"
DELIVER_WEBHOOK = "deliver_webhook"
STORE_LOG_SEGMENT = "store_log_segment"
STORE_STEP_SEGMENT = "store_step_segment"
STORE_MAP_ITEMS = "store_map_items"
LOAD_MAP_ITEMS = "load_map_items"
STEP_FAILED = "StepFailed"
"""ApplicationError type for a step that failed for good; `details[0]` is the step's outputs,
`details[1]` the artifact records written before the failure and, when the step broke a limit
of its sandbox, `details[2]` the limit's name (one of `FAILURE_REASONS`)."""

# Why a step failed, when it broke a limit of its sandbox or could not have one: the step's
# `statusReason` (and the run's error) name it instead of the generic `step-failed`.
MEMORY_LIMIT = "memory-limit"
CPU_TIME_LIMIT = "cpu-time-limit"
TIMEOUT = "timeout"
DISK_LIMIT = "disk-limit"
EGRESS_DENIED = "egress-denied"
PIDS_LIMIT = "pids-limit"
SANDBOX_UNAVAILABLE = "sandbox-unavailable"
SANDBOX_REFUSED = "sandbox-refused"
FAILURE_REASONS = frozenset(
    {
        MEMORY_LIMIT,
        CPU_TIME_LIMIT,
        TIMEOUT,
        DISK_LIMIT,
        EGRESS_DENIED,
        PIDS_LIMIT,
        SANDBOX_UNAVAILABLE,
        SANDBOX_REFUSED,
    }
)


class Wire(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class RunStepRequest(Wire):
    runId: str
    tenant: str
    stepId: str
    uses: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    secrets: list[str] = Field(default_factory=list)
    timeoutSeconds: int = 3600
    sandbox: Sandbox = Sandbox()
    attempt: int = 1


class ArtifactRecord(Wire):
    """The contract's RunArtifact."""

    name: str
    type: Literal["file", "object"]
    sourcePath: str | None = None
    storedPath: str | None = None
    status: Literal["pending", "captured", "failed"]
    notes: str | None = None
    capturedAt: str | None = None
    expressionJson: str | None = Field(
        default=None, description="JSON string of evaluated expression result for object outputs"
    )


class RunStepResult(Wire):
    outputs: dict[str, Any] = Field(default_factory=dict)
    artifacts: list[ArtifactRecord] = Field(default_factory=list)
    egressDenied: list[str] = Field(default_factory=list)
    """Connections the sandbox's egress proxy refused during the step (`host:port (why)`), which
    the run's log names even though the step succeeded."""


class PolicyRequest(Wire):
    runId: str
    policyId: str
    policyVersion: str
    condition: str | bool
    scope: dict[str, Any] = Field(default_factory=dict)


class PolicyResult(Wire):
    passed: bool
    detail: str | None = None


class CaptureRequest(Wire):
    runId: str
    tenant: str
    outputs: list[OutputSpec] = Field(default_factory=list)
    secrets: list[str] = Field(default_factory=list)
    """The pack's secret names (plan.secrets): text files are masked for them when captured."""


class CaptureResult(Wire):
    artifacts: list[ArtifactRecord] = Field(default_factory=list)


class LogSegmentWrite(Wire):
    """Log entries of a run to page out to the artifact store, in sequence order (as dicts: the
    contract's LogEntry, which lives in workflows.contract.state)."""

    runId: str
    tenant: str
    entries: list[dict[str, Any]]


class StepSegmentWrite(Wire):
    """Finished iterations `first..last` of a loop: their step states (as dicts: the contract's
    StepState), in tree order, to page out to the artifact store."""

    runId: str
    tenant: str
    loopId: str
    first: int
    last: int
    steps: list[dict[str, Any]]


class MapItemsWrite(Wire):
    """A fanned-out map's items, to store once as one file per chunk, so each chunk workflow is
    handed a reference rather than its items (which the parent's history would then hold)."""

    runId: str
    tenant: str
    mapStepId: str
    chunkSize: int
    items: list[Any]


class MapItemsRef(Wire):
    """Where a map's items are: `folder` (relative to the store's root) holds `<n>.json` for
    chunk n."""

    folder: str
    chunks: int


class MapItemsRead(Wire):
    runId: str
    tenant: str
    folder: str
    chunk: int


class MapItems(Wire):
    items: list[Any]


class WebhookDelivery(Wire):
    """One event for one webhook. The secret travels encrypted; the activity decrypts it."""

    deliveryId: str
    webhookId: str
    url: str
    secretCiphertext: str
    event: dict[str, Any] = Field(default_factory=dict)


class DeliveryResult(Wire):
    status: int
    attempt: int = 1
