"""The API's side of the PackRun workflow: start a run, read it (queries), decide (update), cancel
(signal), with Temporal's failures turned into the API's errors.

A run is addressed by tenant and run id; the workflow id scopes one by the other, so another
tenant's run is simply not found.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, assert_never

import structlog
from temporalio.api.common.v1 import Payloads, WorkflowExecution
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.workflowservice.v1 import (
    RequestCancelWorkflowExecutionRequest,
    SignalWorkflowExecutionRequest,
)
from temporalio.client import (
    Client,
    RPCTimeoutOrCancelledError,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowHistoryEventFilterType,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    QueryRejectCondition,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api import errors
from api.listing import (
    MEMO_CREATED_AT,
    MEMO_PACK_DIGEST,
    MEMO_PACK_VERSION,
    MEMO_REDRIVE_OF,
    MEMO_REQUEST,
    MEMO_RUN_ID,
)
from api.metrics import Metrics
from api.reads import Read, StateReads
from api.schemas import RunArtifact
from api.settings import ApiSettings
from compiler import CompiledPlan
from compiler.plan import walk
from workflows.contract.artifacts import stored_file
from workflows.contract.initial import initial_state
from workflows.contract.names import (
    MEMO_FINAL_STATE,
    QUERY_ARTIFACTS,
    QUERY_LOGS,
    QUERY_STATE,
    RUN_FAILED_ERROR,
    SA_PACK,
    SA_PLAN_HASH,
    SA_STATUS,
    SA_TENANT,
    SIGNAL_CANCEL,
    SIGNAL_DECISION_REFUSED,
    UPDATE_DECIDE_APPROVAL,
    WORKFLOW_TYPE,
    workflow_id,
)
from workflows.contract.refusals import REFUSAL_CODES, Refusal
from workflows.contract.state import (
    ApprovalOutcome,
    ApprovalSignal,
    CancelSignal,
    LogEntry,
    LogSegment,
    LogsPage,
    LogsQuery,
    PackRunInput,
    Redrive,
    RefusedDecision,
    RunMeta,
    RunResult,
    RunStateSnapshot,
    StateQuery,
    StepState,
    WebhookRef,
)
from workflows.contract.times import now_rfc3339, rfc3339

log = structlog.get_logger("taskrunner.api")

# Right after a start the first workflow task may not have run; waiting longer than this for the
# `state` query only delays the 201, so the run's initial state is built from the plan instead.
FIRST_STATE_TIMEOUT = timedelta(seconds=2)
LOGS_PAGE = 500
# Steps per `state` query: a query's answer is one payload, and Temporal caps payload sizes.
STEPS_PAGE = 2000


def refusal_error(code: Refusal) -> type[errors.ApiError]:
    """The API error a run's refusal of a decision becomes."""
    match code:
        case Refusal.PLAN_HASH_MISMATCH:
            return errors.PlanHashMismatch
        case Refusal.APPROVAL_NOT_FOUND:
            return errors.ApprovalNotFound
        case Refusal.APPROVAL_ALREADY_DECIDED:
            return errors.ApprovalAlreadyDecided
        case Refusal.APPROVAL_NOT_PENDING:
            return errors.ApprovalNotPending
        case Refusal.DUPLICATE_APPROVER:
            return errors.DuplicateApprover
        case Refusal.TOKEN_ALREADY_USED:
            return errors.LinkAlreadyUsed
        case Refusal.APPROVAL_EXPIRED:
            return errors.ApprovalExpired
        case Refusal.EXPIRED_BY_PERSON:
            return errors.ExpiredByPerson
        case Refusal.REQUESTER_NOT_ALLOWED:
            return errors.RequesterNotAllowed
        case Refusal.NO_OPEN_SEAT:
            return errors.NoOpenSeat
        case _:
            assert_never(code)


def transient(exc: BaseException) -> bool:
    """Whether a failed read may answer with the run's last known state: Temporal or the worker
    did not answer, as opposed to an answer (the run is gone, a refusal)."""
    if isinstance(exc, errors.ApiError):
        return isinstance(exc, errors.TemporalUnavailable)
    return not (isinstance(exc, RPCError) and exc.status == RPCStatusCode.NOT_FOUND)


Q = TypeVar("Q")


@dataclass(frozen=True)
class Ended:
    """A run Temporal ended (terminate, execution timeout) without the run's own ending."""

    reason: str
    at: str | None = None


def ended_outside(state: RunStateSnapshot, ended: Ended) -> RunStateSnapshot:
    """The state of a run Temporal cut off, as it truly stands: failed, with the reason; its open
    approvals cancelled (nobody can decide them any more) and its open steps closed."""
    approvals = [
        a.model_copy(update={"status": "cancelled", "missing": []})
        if a.status in ("pending", "waiting")
        else a
        for a in state.approvals
    ]
    steps = []
    for step in state.steps:
        if step.status == "Running":
            step = step.model_copy(update={"status": "Failed", "statusReason": "run-terminated"})
        elif step.status == "Pending":
            step = step.model_copy(update={"status": "Skipped", "statusReason": "run-terminated"})
        steps.append(step)
    return state.model_copy(
        update={
            "status": "failed",
            "error": ended.reason,
            "approvals": approvals,
            "steps": steps,
            "updatedAt": ended.at or state.updatedAt,
        }
    )


class RunGateway:
    def __init__(
        self,
        client: Client,
        settings: ApiSettings,
        metrics: Metrics,
        reads: StateReads | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.metrics = metrics
        self.reads = reads or StateReads()
        self.timeout = timedelta(seconds=settings.query_timeout_seconds)

    def _handle(self, tenant: str, run_id: str) -> WorkflowHandle[Any, Any]:
        return self.client.get_workflow_handle(workflow_id(tenant, run_id))

    # ----------------------------------------------------------------- start

    async def start(
        self,
        compiled: CompiledPlan,
        *,
        tenant: str,
        run_id: str,
        actor: str,
        webhooks: Sequence[WebhookRef] = (),
        request_token: str | None = None,
        pack_digest: str | None = None,
        redrive: Redrive | None = None,
    ) -> RunStateSnapshot:
        """Start a run. `webhooks`: the tenant's registrations now; the run keeps these.
        `request_token`: the Idempotency-Key's identity of the request, kept in the run's memo
        so a retry of the request recognises the run as its own (`started_by`).
        `pack_digest`: the registered version it runs; `redrive`: what it takes over."""
        plan = compiled.plan
        meta = RunMeta(
            runId=run_id,
            tenant=tenant,
            actor=actor,
            requestedAt=now_rfc3339(),
            heartbeatTimeoutSeconds=self.settings.heartbeat_timeout_seconds,
            activityAttempts=self.settings.activity_attempts,
            webhooks=list(webhooks),
            packDigest=pack_digest,
            redrive=redrive,
        )
        pack = f"{plan.pack.name}@{plan.pack.version}"
        memo = {
            MEMO_RUN_ID: run_id,
            MEMO_CREATED_AT: meta.requestedAt,
            MEMO_PACK_VERSION: plan.pack.version,
        }
        if pack_digest is not None:
            memo[MEMO_PACK_DIGEST] = pack_digest
        if redrive is not None:
            memo[MEMO_REDRIVE_OF] = redrive.of
        if request_token is not None:
            memo[MEMO_REQUEST] = request_token
        try:
            handle = await self.client.start_workflow(
                WORKFLOW_TYPE,
                PackRunInput(plan=plan, planHash=compiled.plan_hash, meta=meta),
                id=workflow_id(tenant, run_id),
                task_queue=self.settings.task_queue,
                # A run id names one run forever, even after it finished.
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(SA_TENANT, tenant),
                        SearchAttributePair(SA_PACK, plan.pack.name),
                        SearchAttributePair(SA_STATUS, "pending"),
                        SearchAttributePair(SA_PLAN_HASH, compiled.plan_hash),
                    ]
                ),
                # What the run listing shows without parsing the workflow id.
                memo=memo,
                static_summary=f"pack {pack} run {run_id}",
                static_details=(
                    f"tenant: {tenant}\n\nplan hash: {compiled.plan_hash}\n\n"
                    f"requested by: {actor}\n\nsteps: {len(walk(plan.steps))}"
                ),
                rpc_timeout=self.timeout,
            )
        except WorkflowAlreadyStartedError:
            raise errors.RunAlreadyExists(run_id) from None
        self.metrics.run_started(tenant)
        try:
            first: RunStateSnapshot = await handle.query(
                QUERY_STATE,
                StateQuery(stepsLimit=STEPS_PAGE),
                result_type=RunStateSnapshot,
                rpc_timeout=FIRST_STATE_TIMEOUT,
            )
            return first
        except (RPCError, RPCTimeoutOrCancelledError):
            initial = initial_state(plan, compiled.plan_hash, meta)
            return initial.model_copy(update={"steps": initial.steps[:STEPS_PAGE]})

    async def started_by(self, tenant: str, run_id: str, request_token: str) -> bool:
        """Whether the run was started by the request with this Idempotency-Key identity."""
        handle = self._handle(tenant, run_id)
        async with self._run(handle, run_id):
            description = await handle.describe(rpc_timeout=self.timeout)
            # One key decoded, not the whole memo (a cancelled run's holds its final state).
            token = await description.memo_value(MEMO_REQUEST, None)
        return bool(token == request_token)

    # ----------------------------------------------------------------- read

    async def state(
        self, tenant: str, run_id: str, *, steps_offset: int = 0, steps_limit: int = STEPS_PAGE
    ) -> Read:
        """The run's state with one page of its steps (`totalSteps` says how many there are),
        and how old it is: see api/reads.py for when it is not read from the run right now."""
        handle = self._handle(tenant, run_id)
        page = (steps_offset, steps_limit)

        async def fetch() -> RunStateSnapshot:
            async with self._run(handle, run_id):
                if not self.reads.live(handle.id, page):
                    finished = await self._finished_state(handle, steps_offset, steps_limit)
                    if finished is not None:
                        return finished
                answer, ended = await self._query(
                    handle,
                    QUERY_STATE,
                    StateQuery(stepsOffset=steps_offset, stepsLimit=steps_limit),
                    RunStateSnapshot,
                )
            answer = await self._with_paged_steps(tenant, answer)
            return answer if ended is None else ended_outside(answer, ended)

        read = await self.reads.read(handle.id, page, fetch)
        if read.snapshot.tenant != tenant:  # cannot happen with tenant-scoped ids; never leak
            raise errors.RunNotFound(run_id)
        self.metrics.observe_run(handle.id, read.snapshot.status)
        return read

    async def _finished_state(
        self, handle: WorkflowHandle[Any, Any], steps_offset: int, steps_limit: int
    ) -> RunStateSnapshot | None:
        """A finished run's state from its result, which the server keeps: no worker replays the
        history for it. None when the run is live, or its result does not hold the page (a run
        that ended before results carried their state, one that closed Canceled before it left
        its state in its memo, a page past the steps the result or memo holds).

        A failed run's workflow is Failed: its result is the detail of its failure. A Canceled
        workflow has no result: the run left its final state in its memo, which the describe
        already holds."""
        description = await handle.describe(rpc_timeout=self.timeout)
        state: RunStateSnapshot | None = None
        if description.status == WorkflowExecutionStatus.COMPLETED:
            result: RunResult | None = await self.client.get_workflow_handle(
                handle.id, run_id=description.run_id, result_type=RunResult
            ).result(follow_runs=False, rpc_timeout=self.timeout)
            state = result.state if result is not None else None
        elif description.status == WorkflowExecutionStatus.FAILED:
            result = await self._failed_result(await self._close_event(handle))
            state = result.state if result is not None else None
        elif description.status == WorkflowExecutionStatus.CANCELED:
            try:
                state = await description.memo_value(
                    MEMO_FINAL_STATE, None, type_hint=RunStateSnapshot
                )
            except ValueError:  # not a state this code reads: the run's query answers instead
                state = None
        if state is None:
            return None
        state = await self._with_paged_steps(state.tenant, state)
        end = steps_offset + steps_limit
        if end > len(state.steps) and len(state.steps) < state.totalSteps:
            return None
        page: RunStateSnapshot = state.model_copy(update={"steps": state.steps[steps_offset:end]})
        return page

    async def logs(
        self, tenant: str, run_id: str, after: int, *, final_entry: bool = True
    ) -> LogsPage:
        """A page of the run's log. A run ended by Temporal (terminated, timed out) never wrote
        its own ending: the page says `finished`, and (`final_entry`) the log ends with a
        `run.failed` entry giving the reason, one past the run's last.

        Entries the run paged out to the artifact store (a long run keeps only its recent ones)
        are read from there, so the log comes back whole and in order."""
        handle = self._handle(tenant, run_id)
        async with self._run(handle, run_id):
            page, ended = await self._logs_page(handle, tenant, run_id, after)
            if ended is None:
                return page
            page = page.model_copy(update={"finished": True})
            if not final_entry or len(page.entries) >= LOGS_PAGE:
                return page
            last = page.entries[-1].sequence if page.entries else None
            if last is None and after > 0:
                # Caught up: `after` is the run's last entry, or the ending was already read.
                previous, _ = await self._query(
                    handle, QUERY_LOGS, LogsQuery(after=after - 1, limit=1), LogsPage
                )
                last = after if [e.sequence for e in previous.entries] == [after] else None
            if last is None:
                return page
            entry = LogEntry(
                sequence=last + 1,
                timestamp=ended.at or now_rfc3339(),
                level="error",
                eventType="run.failed",
                message=f"Run failed: {ended.reason}.",
                metadata={"reason": ended.reason, "endedBy": "temporal"},
            )
            return page.model_copy(
                update={"entries": [*page.entries, entry], "nextSequence": entry.sequence}
            )

    async def _logs_page(
        self, handle: WorkflowHandle[Any, Any], tenant: str, run_id: str, after: int
    ) -> tuple[LogsPage, Ended | None]:
        """Up to LOGS_PAGE entries after `after`, from the run or from its stored segments."""
        entries: list[LogEntry] = []
        while True:
            page, ended = await self._query(
                handle, QUERY_LOGS, LogsQuery(after=after, limit=LOGS_PAGE - len(entries)), LogsPage
            )
            if not page.segments:
                entries += page.entries
                last = entries[-1].sequence if entries else after
                return page.model_copy(update={"entries": entries, "nextSequence": last}), ended
            stored = await asyncio.to_thread(
                self._stored_logs, tenant, run_id, page.segments, after, LOGS_PAGE - len(entries)
            )
            entries += stored
            after = stored[-1].sequence
            if len(entries) >= LOGS_PAGE:
                return LogsPage(entries=entries, nextSequence=after, finished=False), ended

    async def _query(
        self, handle: WorkflowHandle[Any, Any], name: str, arg: Any, result_type: type[Q]
    ) -> tuple[Q, Ended | None]:
        """Query a run; with it, why Temporal ended it when the run did not end itself.

        A terminated or timed-out run still answers queries (a worker replays its history) with
        the state it had when it was cut off: `awaiting-approval`, say. Asking the server to
        refuse queries of executions that did not complete cleanly costs nothing for the others.
        """
        try:
            answer: Q = await handle.query(
                name,
                arg,
                result_type=result_type,
                rpc_timeout=self.timeout,
                reject_condition=QueryRejectCondition.NOT_COMPLETED_CLEANLY,
            )
            return answer, None
        except WorkflowQueryRejectedError as exc:
            status = exc.status
        answer = await handle.query(name, arg, result_type=result_type, rpc_timeout=self.timeout)
        if status == WorkflowExecutionStatus.CANCELED:  # the run handled Temporal's cancel itself
            return answer, None
        return answer, await self._ended(handle, status)

    async def _close_event(self, handle: WorkflowHandle[Any, Any]) -> HistoryEvent | None:
        async for event in handle.fetch_history_events(
            event_filter_type=WorkflowHistoryEventFilterType.CLOSE_EVENT, rpc_timeout=self.timeout
        ):
            return event
        return None

    async def _failed_result(self, event: HistoryEvent | None) -> RunResult | None:
        """The RunResult a run that failed itself ended its workflow with; None for a failure
        that is not the run's own."""
        if event is None or not event.HasField("workflow_execution_failed_event_attributes"):
            return None
        failure = event.workflow_execution_failed_event_attributes.failure
        info = failure.application_failure_info
        if info.type != RUN_FAILED_ERROR or not info.details.payloads:
            return None
        decoded = await self.client.data_converter.decode(info.details.payloads, [RunResult])
        result: RunResult = decoded[0]
        return result

    async def _ended(
        self, handle: WorkflowHandle[Any, Any], status: WorkflowExecutionStatus | None
    ) -> Ended | None:
        """Why and when Temporal ended a run, from its close event; None when the run ended
        itself (a run that failed closes its workflow as Failed)."""
        reason = {
            WorkflowExecutionStatus.TERMINATED: "terminated in Temporal",
            WorkflowExecutionStatus.TIMED_OUT: "timed out in Temporal (workflow execution timeout)",
        }.get(status or WorkflowExecutionStatus.FAILED, "failed in Temporal")
        event = await self._close_event(handle)
        if event is None:
            return Ended(reason=reason)
        if await self._failed_result(event) is not None:
            return None
        at = rfc3339(event.event_time.ToDatetime(tzinfo=UTC))
        if event.HasField("workflow_execution_terminated_event_attributes"):
            attrs = event.workflow_execution_terminated_event_attributes
            if attrs.reason:
                reason += f": {attrs.reason}"
            if attrs.identity:
                reason += f" (by {attrs.identity})"
        elif event.HasField("workflow_execution_failed_event_attributes"):
            message = event.workflow_execution_failed_event_attributes.failure.message
            if message:
                reason += f": {message}"
        return Ended(reason=reason, at=at)

    def _stored_logs(
        self, tenant: str, run_id: str, segments: list[LogSegment], after: int, limit: int
    ) -> list[LogEntry]:
        """Entries after `after` from paged-out segments, in order, at most `limit`."""
        entries: list[LogEntry] = []
        for segment in segments:
            path = stored_file(self.settings.data_dir, tenant, run_id, segment.storedPath)
            if path is None:
                raise errors.LogsUnavailable(
                    f"log entries {segment.first}..{segment.last} of run {run_id!r} are in the "
                    f"artifact store ({segment.storedPath}), which this API cannot read: is its "
                    "data directory the workers'?"
                )
            with path.open() as lines:
                for line in lines:
                    entry = LogEntry.model_validate_json(line)
                    if entry.sequence > after:
                        entries.append(entry)
                        if len(entries) >= limit:
                            return entries
        if not entries:
            raise errors.LogsUnavailable(f"the stored log of run {run_id!r} ends early")
        return entries

    async def artifacts(self, tenant: str, run_id: str) -> list[RunArtifact]:
        handle = self._handle(tenant, run_id)
        async with self._run(handle, run_id):
            # The query's records are the contract's RunArtifact already: decoded straight into it.
            records: list[RunArtifact] = await handle.query(
                QUERY_ARTIFACTS, result_type=list[RunArtifact], rpc_timeout=self.timeout
            )
        return records

    async def run_input(self, tenant: str, run_id: str) -> PackRunInput:
        """What the run was started with (plan, planHash, meta), read from its first history event.

        The first event of its latest execution: a run that continued-as-new carries its plan and
        meta along. Needs no worker to answer.
        """
        handle = self._handle(tenant, run_id)
        async with self._run(handle, run_id):
            # One event is all it needs: not a page of a history that may be long.
            async for event in handle.fetch_history_events(page_size=1, rpc_timeout=self.timeout):
                started = event.workflow_execution_started_event_attributes
                decoded = await self.client.data_converter.decode(
                    started.input.payloads, [PackRunInput]
                )
                run_input: PackRunInput = decoded[0]
                if run_input.meta.tenant != tenant:
                    raise errors.RunNotFound(run_id)
                return run_input
        raise errors.RunNotFound(run_id)

    async def requester(self, tenant: str, run_id: str) -> str:
        """Who started the run ("" if no one is named; it never changes, so it is kept)."""
        handle = self._handle(tenant, run_id)

        async def fetch() -> str:
            return (await self.run_input(tenant, run_id)).meta.actor or ""

        return await self.reads.requester(handle.id, fetch)

    async def full_state(self, tenant: str, run_id: str) -> RunStateSnapshot:
        """The run's state with every step (paged through), outputs left out."""
        first = (await self.state(tenant, run_id)).snapshot
        steps = list(first.steps)
        while len(steps) < first.totalSteps:
            page = (await self.state(tenant, run_id, steps_offset=len(steps))).snapshot
            if not page.steps:
                break
            steps.extend(page.steps)
        return first.model_copy(update={"steps": steps})

    async def state_with_outputs(self, tenant: str, run_id: str) -> RunStateSnapshot:
        """Every step with its outputs, straight from the run (what a redrive carries over)."""
        handle = self._handle(tenant, run_id)
        async with self._run(handle, run_id):
            answer: RunStateSnapshot = await handle.query(
                QUERY_STATE,
                StateQuery(includeOutputs=True, stepsLimit=None),
                result_type=RunStateSnapshot,
                rpc_timeout=self.timeout,
            )
        if answer.tenant != tenant:
            raise errors.RunNotFound(run_id)
        return await self._with_paged_steps(tenant, answer)

    async def _with_paged_steps(self, tenant: str, state: RunStateSnapshot) -> RunStateSnapshot:
        """The page with the steps the run paged out (a long loop's finished iterations) read
        back from the artifact store into their places: a reader never sees the difference."""
        if not state.pagedSteps:
            return state
        return await asyncio.to_thread(self._fill_paged_steps, tenant, state)

    def _fill_paged_steps(self, tenant: str, state: RunStateSnapshot) -> RunStateSnapshot:
        steps = list(state.steps)
        # From the last: an earlier insertion would move the places of the later ones.
        for ref in reversed(state.pagedSteps):
            path = stored_file(self.settings.data_dir, tenant, state.runId, ref.storedPath)
            if path is None:
                raise errors.StepsUnavailable(
                    f"steps of run {state.runId!r} are in the artifact store ({ref.storedPath}), "
                    "which this API cannot read: is its data directory the workers'?"
                )
            with path.open() as lines:
                wanted = itertools.islice(lines, ref.skip, ref.skip + ref.take)
                stored = [StepState.model_validate_json(line) for line in wanted]
            if not ref.withOutputs:
                stored = [s.model_copy(update={"outputs": {}}) for s in stored]
            steps[ref.at : ref.at] = stored
        return state.model_copy(update={"steps": steps, "pagedSteps": []})

    async def all_logs(self, tenant: str, run_id: str) -> list[LogEntry]:
        entries: list[LogEntry] = []
        while True:
            page = await self.logs(tenant, run_id, len(entries), final_entry=False)
            entries.extend(page.entries)
            if len(page.entries) < LOGS_PAGE:
                return entries

    # ----------------------------------------------------------------- act

    async def decide(
        self,
        tenant: str,
        run_id: str,
        decision: ApprovalSignal,
        *,
        update_id: str | None = None,
        opened_at: str | None = None,
    ) -> ApprovalOutcome:
        """`update_id`: Temporal's own identity of the decision (derived from an
        Idempotency-Key): a decision sent again with it gets the first outcome, never a
        second vote. `opened_at`: when the gate opened (its `requestedAt`), for the approval
        wait metric; read from the run (a recent read will do) when None."""
        handle = self._handle(tenant, run_id)
        if opened_at is None:
            opened_at = await self._opened_at(tenant, run_id, decision.approvalId)
        try:
            async with self._run(handle, run_id, acting=True):
                with self.reads.writing(handle.id):
                    outcome: ApprovalOutcome = await handle.execute_update(
                        UPDATE_DECIDE_APPROVAL,
                        decision,
                        id=update_id,
                        result_type=ApprovalOutcome,
                        rpc_timeout=self.timeout,
                    )
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            if not isinstance(cause, ApplicationError) or cause.type not in REFUSAL_CODES:
                raise
            raise refusal_error(Refusal(cause.type))(cause.message) from None
        self.metrics.approvals_decided.labels(decision=outcome.status).inc()
        if opened_at:  # "": the caller knows the gate has no opening time
            waited = datetime.now(UTC) - datetime.fromisoformat(opened_at)
            self.metrics.approval_wait_seconds.labels(decision=outcome.status).observe(
                max(0.0, waited.total_seconds())
            )
        return outcome

    async def _opened_at(self, tenant: str, run_id: str, approval_id: str) -> str | None:
        """When the approval's gate opened, for the metric only: any failure here is the
        decision's own to report, so it is not raised."""
        try:
            state = (await self.state(tenant, run_id, steps_limit=0)).snapshot
        except Exception:  # the decision itself will say what is wrong with the run
            return None
        found = next((a for a in state.approvals if a.approvalId == approval_id), None)
        return found.requestedAt if found is not None else None

    async def record_refusal(self, tenant: str, run_id: str, refused: RefusedDecision) -> None:
        """Put a decision the API refused itself into the run's log. Best effort: the caller's
        answer is the refusal whatever happens here (a finished run logs nothing more)."""
        handle = self._handle(tenant, run_id)
        try:
            await handle.signal(SIGNAL_DECISION_REFUSED, refused, rpc_timeout=self.timeout)
        except (RPCError, RPCTimeoutOrCancelledError) as exc:
            log.info("approval.refusal-not-logged", run_id=run_id, error=str(exc)[:200])

    async def cancel(
        self, tenant: str, run_id: str, request: CancelSignal, *, request_id: str | None = None
    ) -> None:
        """`request_id`: Temporal's own identity of the signal (derived from an
        Idempotency-Key): Temporal drops a signal whose request id it has seen."""
        handle = self._handle(tenant, run_id)
        # The signal carries who and why; Temporal's own cancel request, right after it, lets
        # the run close its workflow as Canceled (the Web UI's status), which no signal can.
        request = request.model_copy(update={"temporalCancelFollows": True})
        async with self._run(handle, run_id, acting=True):
            with self.reads.writing(handle.id):
                if request_id is None:
                    await handle.signal(SIGNAL_CANCEL, request, rpc_timeout=self.timeout)
                else:
                    await self._signal_once(handle, SIGNAL_CANCEL, request, request_id)
                await self._request_cancel(handle, request, request_id)

    async def _request_cancel(
        self, handle: WorkflowHandle[Any, Any], request: CancelSignal, request_id: str | None
    ) -> None:
        try:
            await self.client.workflow_service.request_cancel_workflow_execution(
                RequestCancelWorkflowExecutionRequest(
                    namespace=self.client.namespace,
                    workflow_execution=WorkflowExecution(workflow_id=handle.id),
                    identity=self.client.identity,
                    # Temporal drops a repeat of the same request (a keyed retry).
                    request_id=f"{request_id}-cancel" if request_id else str(uuid.uuid4()),
                    reason=request.reason or f"cancelled by {request.actorId or 'the API'}",
                ),
                retry=True,
                timeout=self.timeout,
            )
        except RPCError as exc:
            # The run ended on the signal alone before the request came: nothing left to close.
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise

    async def _signal_once(
        self, handle: WorkflowHandle[Any, Any], name: str, arg: Any, request_id: str
    ) -> None:
        # The SDK's handle.signal makes up a fresh request id each call; the service call takes
        # ours, so a repeat of the same request is one signal.
        payloads = await self.client.data_converter.encode([arg])
        await self.client.workflow_service.signal_workflow_execution(
            SignalWorkflowExecutionRequest(
                namespace=self.client.namespace,
                workflow_execution=WorkflowExecution(workflow_id=handle.id),
                signal_name=name,
                input=Payloads(payloads=payloads),
                identity=self.client.identity,
                request_id=request_id,
            ),
            retry=True,
            timeout=self.timeout,
        )

    # ----------------------------------------------------------------- errors

    @asynccontextmanager
    async def _run(
        self, handle: WorkflowHandle[Any, Any], run_id: str, *, acting: bool = False
    ) -> AsyncIterator[None]:
        """Translate Temporal's failures for one run. `acting`: a signal or update, which Temporal
        refuses with NOT_FOUND both for an unknown run and for one that has finished."""
        try:
            yield
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            if acting and await self._exists(handle):
                raise errors.RunFinished(run_id) from None
            raise errors.RunNotFound(run_id) from None
        except RPCTimeoutOrCancelledError:
            raise errors.TemporalUnavailable(
                f"no worker answered for run {run_id!r} in {self.timeout.total_seconds():g}s"
            ) from None

    async def _exists(self, handle: WorkflowHandle[Any, Any]) -> bool:
        try:
            await handle.describe(rpc_timeout=self.timeout)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return True
