"""The Temporal activities PackRun calls: run a step, evaluate a policy, capture outputs.

A worker builds one `StepActivities` and registers its bound methods:

    activities = StepActivities(Registry(), ArtifactStore(root), EnvSecretProvider())
    Worker(client, task_queue=..., workflows=[...], activities=activities.activities())

(`workflows.worker.build_worker` does, for the worker entry point.)

Failure semantics, which the workflow relies on:

- A permanent failure raises `ApplicationError(message, outputs, artifacts[, reason],
  type=STEP_FAILED, non_retryable=True)`: `details[0]` is the step's outputs so far,
  `details[1]` the artifact records written before the failure and `details[2]`, when the step
  broke a limit of its sandbox (or could not have one), the reason naming it (`memory-limit`,
  ...: `workflows.contract.activities.FAILURE_REASONS`), which becomes the step's status
  reason. Retrying it is the plan's business (the failure policy, with durable timers), not
  Temporal's.
- Anything else is raised as a retryable `ApplicationError` whose `type` is the original
  exception's class name, so Temporal's activity retry covers it.

Every message, output, detail, artifact text and log line is masked for the step's secrets
before it leaves the activity. Original exceptions are not chained onto what is raised,
because Temporal would serialise their (unmasked) messages into the failure.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn

from pydantic_core import to_jsonable_python
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.artifacts import ArtifactStore
from activities.capture import CaptureRefused, read_output
from activities.executor import ExecutorContext, StepFailed
from activities.masking import Masker, MaskingLogger
from activities.registry import Registry
from activities.sandbox.runner import CommandRunner
from activities.secrets import (
    EnvSecretProvider,
    SecretError,
    SecretProvider,
    fill_placeholders,
    resolve_secrets,
    scrub_files,
)
from compiler.ceilings import Ceilings
from compiler.expressions import ExpressionError, evaluate_condition
from compiler.plan import OutputSpec
from workflows.contract.activities import (
    CAPTURE_OUTPUTS,
    EVALUATE_POLICY,
    FAILURE_REASONS,
    LOAD_MAP_ITEMS,
    RUN_STEP,
    SANDBOX_REFUSED,
    STEP_FAILED,
    STORE_LOG_SEGMENT,
    STORE_MAP_ITEMS,
    STORE_STEP_SEGMENT,
    TIMEOUT,
    ArtifactRecord,
    CaptureRequest,
    CaptureResult,
    LogSegmentWrite,
    MapItems,
    MapItemsRead,
    MapItemsRef,
    MapItemsWrite,
    PolicyRequest,
    PolicyResult,
    RunStepRequest,
    RunStepResult,
    StepSegmentWrite,
)
from workflows.contract.artifacts import UnsafePathError, check_name
from workflows.contract.state import LogSegment, StepSegment
from workflows.contract.times import now_rfc3339

HEARTBEAT_SECONDS = 1.0
TIMEOUT_GRACE_SECONDS = 5.0


class StepActivities:
    """The activity implementations, bound to a registry, an artifact store and a secret source.

    `heartbeat_seconds` is how often a running step heartbeats; a workflow should give run-step
    activities a heartbeat timeout comfortably above it, so a lost worker is noticed. A step
    still running `timeout_grace_seconds` after its `timeoutSeconds` is cancelled and fails
    permanently.
    """

    def __init__(
        self,
        registry: Registry,
        store: ArtifactStore,
        secrets: SecretProvider | None = None,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        timeout_grace_seconds: float = TIMEOUT_GRACE_SECONDS,
        runner: CommandRunner | None = None,
        ceilings: Ceilings | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.secrets: SecretProvider = secrets if secrets is not None else EnvSecretProvider()
        self.heartbeat_seconds = heartbeat_seconds
        self.timeout_grace_seconds = timeout_grace_seconds
        self.runner = runner
        self.ceilings = ceilings

    def activities(self) -> list[Callable[..., Any]]:
        """The bound activity methods, for `Worker(activities=...)`."""
        return [
            self.run_step,
            self.evaluate_policy,
            self.capture_outputs,
            self.store_log_segment,
            self.store_step_segment,
            self.store_map_items,
            self.load_map_items,
        ]

    @activity.defn(name=RUN_STEP)
    async def run_step(self, req: RunStepRequest) -> RunStepResult:
        """Run one run step's executor and return its (masked) outputs and artifacts."""
        mask = Masker()
        log = MaskingLogger(activity.logger, mask)
        ctx: ExecutorContext | None = None
        try:
            # The step id names artifacts and folders; refuse one that could not.
            check_name(req.stepId, "step id")
            values = resolve_secrets(self.secrets, req.secrets)
            mask = Masker(values.values())
            log = MaskingLogger(activity.logger, mask)
            params = fill_placeholders(req.with_, values)
            executor = self.registry.get(req.uses)
            ctx = ExecutorContext(
                run_id=req.runId,
                tenant=req.tenant,
                step_id=req.stepId,
                uses=req.uses,
                workspace=self.store.workspace(req.tenant, req.runId),
                store=self.store,
                sandbox=req.sandbox,
                attempt=req.attempt,
                timeout_seconds=req.timeoutSeconds,
                heartbeat=activity.heartbeat,
                logger=log,
                mask=mask,
                runner=self.runner,
            )
            refusal = over_ceilings(req, self.ceilings)
            if refusal:
                raise StepFailed(
                    f"{req.uses}: {SANDBOX_REFUSED}: {refusal}", reason=SANDBOX_REFUSED
                )
            log.info("step.started", extra={"step_id": req.stepId, "uses": req.uses})
            if not ctx.commands.settings.enabled:
                log.warning(
                    "step.unsandboxed",
                    extra={"step_id": req.stepId, "why": "TASKRUNNER_SANDBOX=off"},
                )
            # The step's timeout is enforced here for every executor. The grace lets one that
            # enforces it itself (shell) report its own timeout, with the outputs it has.
            limit = req.timeoutSeconds + self.timeout_grace_seconds
            try:
                async with _heartbeating(self.heartbeat_seconds), asyncio.timeout(limit) as guard:
                    outputs = await executor(params, ctx)
            except TimeoutError:
                if not guard.expired():
                    raise
                raise StepFailed(
                    f"{req.uses}: {TIMEOUT}: step timed out after {req.timeoutSeconds}s",
                    {"limit": TIMEOUT},
                    TIMEOUT,
                ) from None
            finally:
                if values:
                    # Shielded: a cancelled step must not leave a secret behind either.
                    await asyncio.shield(self._scrub(ctx, values, log))
            if not isinstance(outputs, dict):
                raise StepFailed(
                    f"{req.uses}: executor returned {type(outputs).__name__}, not a dict"
                )
            try:
                jsonable = to_jsonable_python(outputs)
            except Exception:
                raise StepFailed(
                    f"{req.uses}: executor outputs are not JSON-serialisable"
                ) from None
            log.info("step.succeeded", extra={"step_id": req.stepId})
            return RunStepResult(
                outputs=mask.value(jsonable),
                artifacts=ctx.artifacts,
                egressDenied=[mask(d) for d in ctx.egress_denied],
            )
        except asyncio.CancelledError:
            log.info("step.cancelled", extra={"step_id": req.stepId})
            raise
        except StepFailed as exc:
            log.info("step.failed", extra={"step_id": req.stepId, "reason": exc.message})
            reason = exc.reason or (ctx.limit if ctx else None)
            _permanent(exc.message, exc.outputs, ctx.artifacts if ctx else [], mask, reason)
        except (SecretError, UnsafePathError) as exc:
            log.info("step.failed", extra={"step_id": req.stepId, "reason": str(exc)})
            _permanent(f"{req.uses}: {exc}", {}, ctx.artifacts if ctx else [], mask)
        except ApplicationError as exc:
            # An executor's own ApplicationError keeps its type and retry choice; only its text
            # and details are masked.
            raise ApplicationError(
                mask(exc.message),
                *mask.value(to_jsonable_python(list(exc.details), fallback=str)),
                type=exc.type,
                non_retryable=exc.non_retryable,
            ) from None
        except Exception as exc:
            raise ApplicationError(
                mask(f"{req.uses}: {type(exc).__name__}: {exc}"), type=type(exc).__name__
            ) from None

    async def _scrub(self, ctx: ExecutorContext, values: dict[str, str], log: Any) -> None:
        changed = await asyncio.to_thread(scrub_files, ctx.workspace, values.values())
        if changed:
            log.info("secrets.scrubbed", extra={"step_id": ctx.step_id, "files": changed[:20]})

    @activity.defn(name=EVALUATE_POLICY)
    async def evaluate_policy(self, req: PolicyRequest) -> PolicyResult:
        """Evaluate a policy's condition over the scope the workflow sent.

        An expression that fails at runtime is a permanent failure: the same scope would fail
        the same way.
        """
        label = f"policy {req.policyId}@{req.policyVersion}"
        try:
            passed = evaluate_condition(req.condition, req.scope)
        except ExpressionError as exc:
            raise ApplicationError(
                f"{label}: {exc}", {}, type=STEP_FAILED, non_retryable=True
            ) from None
        verdict = "passed" if passed else "failed"
        return PolicyResult(passed=passed, detail=f"{label} {verdict}: condition {req.condition!r}")

    @activity.defn(name=STORE_LOG_SEGMENT)
    async def store_log_segment(self, req: LogSegmentWrite) -> LogSegment:
        """Page a run's older log entries out of the workflow into the artifact store."""
        stored = await asyncio.to_thread(
            self.store.write_log_segment, req.tenant, req.runId, req.entries
        )
        return LogSegment(
            first=req.entries[0]["sequence"], last=req.entries[-1]["sequence"], storedPath=stored
        )

    @activity.defn(name=STORE_STEP_SEGMENT)
    async def store_step_segment(self, req: StepSegmentWrite) -> StepSegment:
        """Page a long loop's finished iterations' step states out of the workflow."""
        stored, count = await asyncio.to_thread(
            self.store.write_step_segment,
            req.tenant,
            req.runId,
            req.loopId,
            req.first,
            req.last,
            req.steps,
        )
        return StepSegment(
            loopId=req.loopId, first=req.first, last=req.last, count=count, storedPath=stored
        )

    @activity.defn(name=STORE_MAP_ITEMS)
    async def store_map_items(self, req: MapItemsWrite) -> MapItemsRef:
        """Store a fanned-out map's items, a file per chunk, so chunks get them by reference."""
        folder, chunks = await asyncio.to_thread(
            self.store.write_map_items,
            req.tenant,
            req.runId,
            req.mapStepId,
            req.chunkSize,
            req.items,
        )
        return MapItemsRef(folder=folder, chunks=chunks)

    @activity.defn(name=LOAD_MAP_ITEMS)
    async def load_map_items(self, req: MapItemsRead) -> MapItems:
        """One chunk's items, as `store_map_items` stored them."""
        items = await asyncio.to_thread(
            self.store.read_map_items, req.tenant, req.runId, req.folder, req.chunk
        )
        return MapItems(items=items)

    @activity.defn(name=CAPTURE_OUTPUTS)
    async def capture_outputs(self, req: CaptureRequest) -> CaptureResult:
        """Copy each declared file output from the run workspace into the run's artifacts.

        One record per `type: file` output, in order; `object` outputs are evaluated by the
        workflow and are not part of the result. A missing, unsafe or unreadable file gives a
        `failed` record with notes rather than failing the activity, so one bad output does
        not hide the others. Text files are masked for `req.secrets`; other files are copied
        as they are.
        """
        names = [n for n in req.secrets if self.secrets.get(n) is not None]
        mask = Masker(resolve_secrets(self.secrets, names).values())
        records = [
            self._capture_one(req, spec, mask) for spec in req.outputs if spec.type == "file"
        ]
        return CaptureResult(artifacts=records)

    def _capture_one(self, req: CaptureRequest, spec: OutputSpec, mask: Masker) -> ArtifactRecord:
        def failed(notes: str) -> ArtifactRecord:
            return ArtifactRecord(
                name=spec.name,
                type="file",
                sourcePath=spec.path,
                status="failed",
                notes=mask(notes),
                capturedAt=now_rfc3339(),
            )

        if not spec.path:
            return failed("file output has no path")
        try:
            self.store.artifact_path(req.tenant, req.runId, spec.name)
        except UnsafePathError as exc:
            return failed(f"refused: {exc}")
        try:
            data = read_output(self.store.workspace(req.tenant, req.runId), spec.path)
        except CaptureRefused as exc:
            return failed(str(exc))
        try:
            if mask:
                try:
                    text = data.decode()
                except UnicodeDecodeError:
                    record = self.store.write_bytes(req.tenant, req.runId, spec.name, data)
                    record.notes = "binary file: stored without masking"
                else:
                    record = self.store.write_text(req.tenant, req.runId, spec.name, mask(text))
            else:
                record = self.store.write_bytes(req.tenant, req.runId, spec.name, data)
            record.sourcePath = spec.path
            return record
        except OSError as exc:
            return failed(f"could not store {spec.path!r}: {exc.strerror or exc}")


def over_ceilings(req: RunStepRequest, ceilings: Ceilings | None) -> str:
    """Why this worker refuses the step's sandbox (its operator's ceilings), or "".

    The API refuses such a plan at compile time; this catches a plan compiled under other
    ceilings (another API, settings changed since) before anything runs.
    """
    if ceilings is None:
        return ""
    box = req.sandbox
    if box.mode == "open" and not ceilings.allow_open:
        return "spec.sandbox.mode `open` is not allowed on this worker"
    for field, value, ceiling in (
        ("spec.sandbox.memoryLimitMiB", box.memoryLimitMiB, ceilings.memory_mib),
        ("spec.sandbox.cpuLimitMillicores", box.cpuLimitMillicores, ceilings.cpu_millicores),
        ("spec.sandbox.quotaSeconds", box.quotaSeconds, ceilings.quota_seconds),
        ("timeoutSeconds", req.timeoutSeconds, ceilings.timeout_seconds),
    ):
        if ceiling is not None and value > ceiling:
            return f"{field} {value} is more than this worker allows ({ceiling})"
    return ""


def _permanent(
    message: str,
    outputs: dict[str, Any],
    artifacts: list[ArtifactRecord],
    mask: Masker,
    reason: str | None = None,
) -> NoReturn:
    details: list[Any] = [
        mask.value(to_jsonable_python(outputs, fallback=str)),
        [a.model_dump(mode="json") for a in artifacts],
    ]
    # Only the known names travel: the workflow shows the reason as the step's status reason.
    if reason in FAILURE_REASONS:
        details.append(reason)
    raise ApplicationError(
        mask(message),
        *details,
        type=STEP_FAILED,
        non_retryable=True,
    ) from None


@contextlib.asynccontextmanager
async def _heartbeating(interval: float) -> AsyncIterator[None]:
    """Heartbeat every `interval` seconds while the body runs.

    Temporal delivers a cancellation to an activity only in answer to a heartbeat, so a step
    that is waiting on a subprocess or a socket still has to heartbeat to be cancellable.
    """

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(interval)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        # wait() rather than awaiting the task: a cancellation of the activity arriving now
        # must still propagate, not be swallowed along with the heartbeat task's own.
        await asyncio.wait([task])
