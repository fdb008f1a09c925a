"""The one generic workflow: PackRun interprets any compiled plan; PackRunMapChunk runs a slice of
a large map as its child so no history grows with the number of items.

Decisions arrive by the `approval` signal (fire-and-forget, for chat bots and the Web UI) or the
`decide_approval` update; both go through one handler (`_decide`), which writes a refused
decision to the run's log and, for the update, fails it with the refusal's code. `cancel`
(signal) and Temporal's own cancel request both end the run gracefully. A run that failed closes
its workflow as Failed (its RunResult the failure's detail), one cancelled as Canceled when
Temporal's request came (the API sends it after its signal), so Temporal's own status is the
run's outcome; a Canceled workflow has no result, so it leaves its final state in its memo. The
run's state is the RunBook's: this module reads it and calls its methods, and
never assigns to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows.contract.activities import (
        CAPTURE_OUTPUTS,
        DELIVER_WEBHOOK,
        LOAD_MAP_ITEMS,
        STORE_LOG_SEGMENT,
        STORE_STEP_SEGMENT,
        ArtifactRecord,
        CaptureRequest,
        CaptureResult,
        DeliveryResult,
        LogSegmentWrite,
        MapItems,
        MapItemsRead,
        StepSegmentWrite,
        WebhookDelivery,
    )
    from workflows.contract.names import (
        CHUNK_WORKFLOW_TYPE,
        MEMO_FINAL_STATE,
        QUERY_ARTIFACTS,
        QUERY_LOGS,
        QUERY_STATE,
        RUN_FAILED_ERROR,
        SA_PACK,
        SA_PLAN_HASH,
        SA_STATUS,
        SA_TENANT,
        SIGNAL_APPROVAL,
        SIGNAL_CANCEL,
        SIGNAL_DECISION_REFUSED,
        UPDATE_DECIDE_APPROVAL,
        WORKFLOW_TYPE,
    )
    from workflows.contract.state import (
        FINAL_STATE_STEPS,
        TERMINAL_RUN_STATUSES,
        ApprovalOutcome,
        ApprovalSignal,
        CancelSignal,
        ChunkInput,
        ChunkResult,
        LogEntry,
        LogSegment,
        LogsPage,
        LogsQuery,
        PackRunInput,
        RefusedDecision,
        RunResult,
        RunStateSnapshot,
        StateQuery,
        StepSegment,
        StepState,
        Via,
        WebhookRef,
        bounded_state,
    )
    from workflows.interpreter import MAP_ITEMS_TIMEOUT, Frame, Interpreter
    from workflows.local_activities import run_local_activity
    from workflows.patches import (
        PATCH_APPROVAL_RULES,
        PATCH_CANCELLED_STATE_IN_MEMO,
        PATCH_CLOSE_AS_ENDED,
        PATCH_ENDED_RUNS,
        PATCH_ITEM_RANGES,
        PATCH_LOG_PAGING,
        PATCH_NESTED_CONTINUE_AS_NEW,
        PATCH_NESTED_LOG_PAGING,
        PATCH_PAGE_ITERATIONS,
    )
    from workflows.run_book import RunBook

TEMPORAL_CANCEL_WAIT = timedelta(seconds=30)
"""How long a run cancelled by a signal that announced Temporal's cancel request waits for it
before it ends (Completed, then) anyway: the sender died between its two calls."""

CAPTURE_TIMEOUT = timedelta(minutes=5)
WEBHOOK_ATTEMPT_TIMEOUT = timedelta(seconds=30)
WEBHOOK_GIVE_UP_AFTER = timedelta(hours=1)
WEBHOOK_ATTEMPTS = 10
LOG_PAGE_TIMEOUT = timedelta(seconds=30)
CARRY_RETRY_EVENTS = 1000
"""After the state proved too large to carry, the events to wait before measuring it again (a
loop's boundaries come every few events; measuring at each would cost more than the steps)."""
CARRY_LIMIT_BYTES = 1_500_000
"""Temporal refuses payloads over 2 MB; carried state stays well below that."""


@workflow.defn(name=WORKFLOW_TYPE)
class PackRun:
    @workflow.init
    def __init__(self, run_input: PackRunInput) -> None:
        self.input = run_input
        self.book = RunBook(
            run_input.plan, run_input.planHash, run_input.meta, workflow.now, run_input.carried
        )
        self.interp = Interpreter(
            self.book, notify=self._refresh, between_steps=self._between_inner_steps
        )
        # The task running the plan (cancelled by the `cancel` signal) and the webhook
        # deliveries under way: the workflow's own machinery, not the run's state.
        self._task: asyncio.Task[Any] | None = None
        self._deliveries: list[asyncio.Task[None]] = []
        self._paging = asyncio.Lock()
        """Held while a page of the log is written, so only one is under way at a time."""
        if run_input.meta.webhooks:
            self.book.on_log(self._on_log)

    # ----------------------------------------------------------------- main

    @workflow.run
    async def run(self, run_input: PackRunInput) -> RunResult:
        book = self.book
        if run_input.carried is None:
            book.start()
        else:
            book.continued(history_from=workflow.info().run_id)
        self._upsert(initial=True)
        self._refresh()

        self._task = asyncio.current_task()
        try:
            if book.cancel_requested:
                raise asyncio.CancelledError
            ok = await self._interpret()
        except asyncio.CancelledError:
            # Without our signal first, this is Temporal's own cancel request (the Web UI's).
            book.request_cancel(through_temporal=True)
            return await self._end_cancelled()
        return await self._end(ok)

    async def _interpret(self) -> bool:
        book = self.book
        steps = book.plan.steps
        frame = Frame()
        while book.next_step_index < len(steps):
            step = steps[book.next_step_index]
            self._details(f"Running step `{step.id}` ({book.next_step_index + 1} of {len(steps)})")
            ok = await self.interp.run_step(step, frame)
            book.advance()
            if not ok:
                for rest in steps[book.next_step_index :]:
                    self.interp.skip(rest, frame, "previous-step-failed")
                return False
            if book.next_step_index >= len(steps):
                break
            moving_on = self._should_continue_as_new()
            if (
                book.logs
                and (moving_on or len(book.logs) >= book.meta.logsKeptInRun)
                # New commands (a local activity): only for runs that started with this code.
                and workflow.patched(PATCH_LOG_PAGING)
            ):
                await self._page_out_logs()
            if moving_on:
                await self._continue_as_new()
        return True

    async def _continue_as_new(self) -> None:
        """Continue as new with the run's state; returns only when it is too large to carry."""
        book = self.book
        await self._page_out_iterations()
        if book.surely_too_large_to_carry(CARRY_LIMIT_BYTES):
            # Told from a count (a map in levels): building it would only prove the same.
            book.warn_too_large_to_carry(workflow.info().get_current_history_length())
            return
        carried = book.carry()
        if len(carried.model_dump_json()) > CARRY_LIMIT_BYTES:
            # Too big to pass on in one payload: this history still has headroom (the
            # suggestion comes far below Temporal's hard limits), so go on in it.
            book.warn_too_large_to_carry(workflow.info().get_current_history_length())
            return
        await self._deliveries_done()
        await workflow.wait_condition(workflow.all_handlers_finished)
        # Measured again: what happened while waiting (a delivery's log entry, a decision) goes
        # along too. (The command is the same either way, so histories replay alike.)
        carried = book.carry()
        workflow.continue_as_new(
            PackRunInput(plan=book.plan, planHash=book.plan_hash, meta=book.meta, carried=carried)
        )

    async def _between_inner_steps(self, resumable: bool) -> None:
        """A boundary inside a parallel block, map, loop or conditional: page the log out here
        too, so a long loop holds no more entries than a long plan; and where the run could pick
        up again (`resumable`: nothing runs beside the step that ended, and every step enclosing
        it is a loop or conditional), continue as new here when it is time, so a long loop is
        not bound to one history."""
        book = self.book
        if (
            resumable
            and self._should_continue_as_new()
            and not self._carry_refused_recently()
            # New commands (continue-as-new mid-step): only for runs that started with this code.
            and workflow.patched(PATCH_NESTED_CONTINUE_AS_NEW)
        ):
            if book.logs:
                await self._page_out_logs()
            await self._continue_as_new()
            return
        # One page at a time: branches that reach a boundary meanwhile leave it to this one.
        if self._paging.locked() or len(book.logs) < book.meta.logsKeptInRun:
            return
        # New commands (a local activity): only for runs that started with this code.
        if not workflow.patched(PATCH_NESTED_LOG_PAGING):
            return
        async with self._paging:
            await self._page_out_logs()

    async def _page_out_logs(self) -> None:
        """Move the log entries the workflow holds to the artifact store, so neither this
        history's memory nor the state carried across continue-as-new grows with the log."""
        book = self.book
        entries = [e.model_dump(mode="json") for e in book.logs]
        try:
            segment = await run_local_activity(
                STORE_LOG_SEGMENT,
                LogSegmentWrite(runId=book.meta.runId, tenant=book.meta.tenant, entries=entries),
                budget=self.interp.starts,
                result_type=LogSegment,
                start_to_close_timeout=LOG_PAGE_TIMEOUT,
                retry_policy=RetryPolicy(maximum_attempts=3),
                summary="page out log entries",
            )
        except ActivityError as exc:  # the entries stay here: nothing is lost, only kept longer
            book.warn_logs_kept(f"{exc.cause or exc}")
            return
        book.paged_out(segment)

    async def _page_out_iterations(self) -> None:
        """Move the finished iterations' step states of loops to the artifact store, so the
        state carried across continue-as-new does not grow with a loop's length (the state
        query says where they went; the API reads them back in their places)."""
        book = self.book
        pages = book.iterations_to_page()
        # New commands (local activities): only for runs that started with this code.
        if not pages or not workflow.patched(PATCH_PAGE_ITERATIONS):
            return
        for page in pages:
            try:
                segment = await run_local_activity(
                    STORE_STEP_SEGMENT,
                    StepSegmentWrite(
                        runId=book.meta.runId,
                        tenant=book.meta.tenant,
                        loopId=page.loop_id,
                        first=page.first,
                        last=page.last,
                        steps=page.entries,
                    ),
                    result_type=StepSegment,
                    budget=self.interp.starts,
                    start_to_close_timeout=LOG_PAGE_TIMEOUT,
                    retry_policy=RetryPolicy(maximum_attempts=3),
                    summary=f"page out {page.loop_id}[{page.first}..{page.last}]",
                )
            except ActivityError:
                # The states stay here: nothing is lost; the carried state is measured as is.
                return
            book.paged_out_steps(page, segment)

    def _carry_refused_recently(self) -> bool:
        refused = self.book.carry_refused_at
        length = workflow.info().get_current_history_length()
        return refused is not None and length < refused + CARRY_RETRY_EVENTS

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        limit = self.book.meta.continueAsNewAfterEvents
        if limit is not None and info.get_current_history_length() >= limit:
            return True
        return info.is_continue_as_new_suggested()

    async def _end(self, ok: bool) -> RunResult:
        self.book.add_artifacts(self.interp.object_outputs())
        await self._capture_files()
        self.book.end(ok, loud=workflow.patched(PATCH_ENDED_RUNS))
        close_as_ended = workflow.patched(PATCH_CLOSE_AS_ENDED)
        result = await self._close(ended=close_as_ended)
        if not ok and close_as_ended:
            # Failed in Temporal's eyes too; the result travels as the failure's detail, so the
            # API still reads the final state from the server alone.
            raise ApplicationError(
                result.error or "the run failed", result, type=RUN_FAILED_ERROR, non_retryable=True
            )
        return result

    async def _end_cancelled(self) -> RunResult:
        self.book.end_cancelled(loud=workflow.patched(PATCH_ENDED_RUNS))
        if not workflow.patched(PATCH_CLOSE_AS_ENDED):
            result = await self._close()
            if self.book.cancelled_through_temporal:
                # Re-raised so Temporal records the execution as Canceled, as the operator asked.
                raise asyncio.CancelledError
            return result
        result = await self._close(ended=True)
        if self.book.temporal_cancel_follows and workflow.cancellation_reason() is None:
            try:
                await workflow.wait_condition(
                    lambda: workflow.cancellation_reason() is not None,
                    timeout=TEMPORAL_CANCEL_WAIT,
                )
            except TimeoutError:
                return result  # never came: Completed, its status `cancelled` in the result
            except asyncio.CancelledError:
                pass  # the request itself, arriving while waiting
        if workflow.cancellation_reason() is not None:
            # Only Temporal's own request can close a workflow as Canceled; a signal alone
            # (sent by hand from the Web UI, say) leaves it Completed.
            if workflow.patched(PATCH_CANCELLED_STATE_IN_MEMO) and result.state is not None:
                # Canceled keeps no result and the SDK's cancel carries no details: the memo,
                # which a describe returns, is where the final state outlives the workers.
                held = bounded_state(result.state)
                if held is not None:
                    workflow.upsert_memo({MEMO_FINAL_STATE: held})
            raise asyncio.CancelledError
        return result

    async def _close(self, *, ended: bool = False) -> RunResult:
        """Publish the final state, let deliveries and handlers finish, return the result.
        `ended`: the run's outcome is settled, so Temporal's cancel request arriving now (the
        API's, right after its `cancel` signal) neither cuts the deliveries short nor changes
        how a run that succeeded or failed closes."""
        self._upsert()
        self._refresh()
        while True:
            try:
                await self._deliveries_done()
                await workflow.wait_condition(workflow.all_handlers_finished)
                break
            except asyncio.CancelledError:
                if not ended:
                    raise
        book = self.book
        return RunResult(
            status=book.status,
            error=book.error,
            outputs=book.outputs,
            # The result is not a command's identity: old histories replay with or without it.
            state=book.snapshot(StateQuery(stepsLimit=FINAL_STATE_STEPS)),
        )

    async def _capture_files(self) -> None:
        files = [o for o in self.book.plan.outputs if o.type == "file"]
        if not files:
            return
        try:
            result = await workflow.execute_activity(
                CAPTURE_OUTPUTS,
                CaptureRequest(
                    runId=self.book.meta.runId,
                    tenant=self.book.meta.tenant,
                    outputs=files,
                    secrets=list(self.book.plan.secrets),
                ),
                result_type=CaptureResult,
                start_to_close_timeout=CAPTURE_TIMEOUT,
                summary="capture outputs",
            )
            captured = result.artifacts
        except Exception as exc:  # a capture problem must not lose the run's own result
            captured = [
                ArtifactRecord(
                    name=o.name, type="file", sourcePath=o.path, status="failed", notes=str(exc)
                )
                for o in files
            ]
        self.book.capture(captured)

    # ----------------------------------------------------------------- webhooks

    def _on_log(self, entry: LogEntry) -> None:
        if entry.eventType.startswith("webhook."):
            return  # a delivery's own outcome is never delivered: that would never end
        for hook in self.book.meta.webhooks:
            if entry.eventType in hook.events:
                self._deliveries.append(asyncio.create_task(self._deliver(hook, entry)))

    async def _deliveries_done(self) -> None:
        await workflow.wait_condition(lambda: all(t.done() for t in self._deliveries))

    def _event(self, entry: LogEntry) -> dict[str, Any]:
        book = self.book
        event: dict[str, Any] = {
            "eventType": entry.eventType,
            "sequence": entry.sequence,
            "timestamp": entry.timestamp,
            "level": entry.level,
            "message": entry.message,
            "stepId": entry.stepId,
            "metadata": entry.metadata,
            "runId": book.meta.runId,
            "tenant": book.meta.tenant,
            "pack": book.plan.pack.name,
            "packVersion": book.plan.pack.version,
            "planHash": book.plan_hash,
            "runStatus": book.status,
        }
        approval = book.approvals.get(entry.metadata.get("approvalId", ""))
        if approval is not None:
            event["approvalId"] = approval.approvalId
            event["gateMessage"] = approval.message
            event["requiredGrants"] = approval.grants
            event["requiredApprovals"] = approval.requiredApprovals
            # What a bot shows next to the links: who may decide, and who is still needed.
            event["missing"] = list(approval.missing)
            if approval.quorum:
                event["quorum"] = [g.model_dump() for g in approval.quorum]
            if approval.allowRequester is not None:
                event["allowRequester"] = approval.allowRequester
                event["requester"] = book.meta.actor
        return event

    async def _deliver(self, hook: WebhookRef, entry: LogEntry) -> None:
        delivery_id = f"{workflow.info().workflow_id}#{entry.sequence}#{hook.id}"
        meta: dict[str, Any] = {
            "webhookId": hook.id,
            "webhookEvent": entry.eventType,
            "deliveryId": delivery_id,
        }
        try:
            result = await workflow.execute_activity(
                DELIVER_WEBHOOK,
                WebhookDelivery(
                    deliveryId=delivery_id,
                    webhookId=hook.id,
                    url=hook.url,
                    secretCiphertext=hook.secretCiphertext,
                    event=self._event(entry),
                ),
                result_type=DeliveryResult,
                start_to_close_timeout=WEBHOOK_ATTEMPT_TIMEOUT,
                schedule_to_close_timeout=WEBHOOK_GIVE_UP_AFTER,
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1),
                    backoff_coefficient=2.0,
                    maximum_interval=timedelta(seconds=60),
                    maximum_attempts=WEBHOOK_ATTEMPTS,
                    non_retryable_error_types=["WebhookRefused"],
                ),
                summary=f"webhook {hook.id}: {entry.eventType}",
            )
        except ActivityError as exc:
            cause = exc.cause
            reason = cause.message if isinstance(cause, ApplicationError) else str(cause or exc)
            self.book.log(
                "webhook.failed",
                f"Webhook delivery failed: {entry.eventType} to {hook.id}: {reason}",
                level="warn",
                **meta,
            )
            return
        self.book.log(
            "webhook.delivered",
            f"Webhook delivered: {entry.eventType} to {hook.id}",
            status=result.status,
            attempts=result.attempt,
            **meta,
        )

    # ----------------------------------------------------------------- operators' view

    def _refresh(self) -> None:
        """Keep run status, TaskRunnerStatus and the Web UI's current details in step."""
        book = self.book
        if book.settle_waiting():
            self._upsert()
        gates = book.open_gates
        if book.status in TERMINAL_RUN_STATUSES:
            self._details(f"Run **{book.status}**." + (f" {book.error}" if book.error else ""))
        elif gates:
            lines = []
            for step_id, approval_id in sorted(gates.items()):
                approval = book.approvals[approval_id]
                seats = book.seats(approval)
                needs = f"; needs {', '.join(approval.missing)}" if approval.missing else ""
                lines.append(
                    f"Waiting for approval **{approval_id}** at step `{step_id}` "
                    f"({seats.filled} of {seats.required}{needs}); send the `approval` signal with "
                    # In backticks, so the Web UI's Markdown keeps the quotes straight and the
                    # payload can be pasted into its signal dialog as it is.
                    f'`{{"approvalId": "{approval_id}", "decision": "approved", '
                    f'"planHash": "{book.plan_hash}", "actorId": "user:you"}}`'
                )
            self._details("\n\n".join(lines))

    def _details(self, text: str) -> None:
        workflow.set_current_details(text)

    def _upsert(self, initial: bool = False) -> None:
        book = self.book
        if not book.meta.searchAttributes:
            return
        updates = [SA_STATUS.value_set(book.status)]
        if initial:
            updates += [
                SA_TENANT.value_set(book.meta.tenant),
                SA_PACK.value_set(book.plan.pack.name),
                SA_PLAN_HASH.value_set(book.plan_hash),
            ]
        workflow.upsert_search_attributes(updates)

    # ----------------------------------------------------------------- messages

    @workflow.signal(name=SIGNAL_APPROVAL)
    def approval(self, payload: Any) -> None:
        # Taken as plain data and checked here, so a malformed decision (sent by hand from the
        # Web UI, say) is refused in the run's own log rather than dropped by the worker.
        try:
            decision = ApprovalSignal.model_validate(payload)
        except ValidationError as exc:
            self.book.log(
                "gate.decision-refused",
                f"Decision refused: not a valid approval payload ({exc.error_count()} errors: "
                + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                + ")",
                level="warn",
                error="InvalidPayload",
                via="signal",
            )
            return
        # Whatever the payload claims, a signal is a signal: it cannot pass for a link's vote.
        self._decide(decision, "signal")

    @workflow.update(name=UPDATE_DECIDE_APPROVAL)
    def decide_approval(self, decision: ApprovalSignal) -> ApprovalOutcome:
        # No validator: a refused decision is written to the run log (who, why, when), which a
        # validator cannot do; the update then fails with the refusal's code.
        return self._decide(decision, "link" if decision.tokenId is not None else "rest")

    def _decide(self, decision: ApprovalSignal, via: Via) -> ApprovalOutcome:
        book = self.book
        # Histories recorded before these rules (the deadline, `expired` as the timer's word only,
        # the requester, quorum seats) replay under the rules they were recorded with.
        strict = workflow.patched(PATCH_APPROVAL_RULES)
        problem = book.check_decision(decision, workflow.now(), strict=strict)
        if problem is not None:
            outcome = book.refuse(decision, problem[0], problem[1], via if strict else None)
            if via == "signal":
                return outcome
            # The update fails with the refusal's code (the API's 4xx); the log entry stays.
            raise ApplicationError(problem[1], type=problem[0].value, non_retryable=True)
        outcome = book.apply_decision(decision, via if strict else None)
        self._refresh()
        return outcome

    @workflow.signal(name=SIGNAL_DECISION_REFUSED)
    def decision_refused(self, refused: RefusedDecision) -> None:
        # Only logged: the API already refused it, and the run is untouched.
        self.book.log(
            "gate.decision-refused",
            f"Decision refused: {refused.reason}",
            level="warn",
            step_id=(a.stepId if (a := self.book.approvals.get(refused.approvalId)) else None),
            approvalId=refused.approvalId,
            actorId=refused.actorId,
            decision=refused.decision,
            via=refused.via,
            error=refused.code,
            reason=refused.reason,
            statedActorId=refused.statedActorId,
        )

    @workflow.signal(name=SIGNAL_CANCEL)
    def cancel(self, request: CancelSignal | None = None) -> None:
        actor = request.actorId if request else None
        reason = request.reason if request else None
        follows = bool(request and request.temporalCancelFollows)
        if not self.book.request_cancel(actor, reason, temporal_follows=follows):
            return
        if self._task is not None:
            self._task.cancel()

    @workflow.query(name=QUERY_STATE)
    def state(self, query: StateQuery | None = None) -> RunStateSnapshot:
        return self.book.snapshot(query or StateQuery())

    @workflow.query(name=QUERY_LOGS)
    def logs(self, query: LogsQuery | None = None) -> LogsPage:
        query = query or LogsQuery()
        finished = self.book.status in TERMINAL_RUN_STATUSES
        return self.book.logs_page(query.after, query.limit, finished)

    @workflow.query(name=QUERY_ARTIFACTS)
    def artifacts(self) -> list[ArtifactRecord]:
        return list(self.book.artifacts)


@workflow.defn(name=CHUNK_WORKFLOW_TYPE)
class PackRunMapChunk:
    """Runs items `startIndex..` of one map for its parent PackRun and hands back what happened."""

    @workflow.run
    async def run(self, chunk: ChunkInput) -> ChunkResult:
        book = RunBook(
            chunk.plan, chunk.planHash, chunk.meta, workflow.now, visible=chunk.visibleSteps
        )
        rid = chunk.mapStepId
        items: Sequence[Any] = chunk.items
        if chunk.itemsRange is not None:
            # A range: this chunk's slice, computed (a slice of a range is a range, no list).
            begin = chunk.startIndex
            items = range(*chunk.itemsRange)[begin : begin + chunk.rangeChunkSize]
        elif chunk.itemsFolder is not None:
            # By reference: the parent stored the items; this chunk's history records its slice.
            loaded = await run_local_activity(
                LOAD_MAP_ITEMS,
                MapItemsRead(
                    runId=chunk.meta.runId,
                    tenant=chunk.meta.tenant,
                    folder=chunk.itemsFolder,
                    chunk=chunk.chunkNumber,
                ),
                result_type=MapItems,
                start_to_close_timeout=MAP_ITEMS_TIMEOUT,
                retry_policy=RetryPolicy(maximum_attempts=5),
                summary=f"{rid}: load items of chunk {chunk.chunkNumber}",
            )
            items = loaded.items
        book.start_chunk(chunk.template, rid, chunk.startIndex, len(items))
        interp = Interpreter(book, fan_out=False)
        ok, outputs = await interp.map_iterations(
            chunk.template,
            Frame(vars=dict(chunk.vars)),
            rid,
            items,
            chunk.startIndex,
            chunk.maxParallel,
            chunk.continueOnError,
        )
        # Per-item started/completed entries stay here; the parent logs one summary per chunk, so
        # its history and log do not grow by two entries per item. Problems travel back.
        ranges: list[tuple[int, int]] = []
        told: set[str] = set()
        if workflow.patched(PATCH_ITEM_RANGES):
            ranges, told = _plain_items(book, chunk, len(items), outputs)
        rest = [s for s in book.steps.values() if s.stepId not in told]
        plain = [s for s in rest if _plain_success(s)]
        return ChunkResult(
            steps=[s for s in rest if not _plain_success(s)],
            logs=[entry for entry in book.logs if entry.level in ("warn", "error")],
            outputs=outputs,
            failed=not ok,
            artifacts=book.artifacts,
            succeeded=[s.stepId for s in plain],
            succeededAt=book.stamp() if plain or ranges else None,
            succeededItems=ranges,
        )


def _plain_items(
    book: RunBook, chunk: ChunkInput, count: int, outputs: list[Any]
) -> tuple[list[tuple[int, int]], set[str]]:
    """The chunk's items whose every step is a plain success (the template's own step may have
    outputs: they are the item's entry in `outputs`), as index ranges, and those steps' ids."""
    ranges: list[tuple[int, int]] = []
    told: set[str] = set()
    for offset in range(count):
        index = chunk.startIndex + offset
        root = f"{chunk.mapStepId}[{index}]::{chunk.template.id}"
        subtree = book.subtree(root)
        head = book.steps[root]
        if not (
            _plain_success(head.model_copy(update={"outputs": {}}))
            and head.outputs == (outputs[offset] or {})
            and all(_plain_success(book.steps[s]) for s in subtree[1:])
        ):
            continue
        told.update(subtree)
        if ranges and ranges[-1][1] == index - 1:
            ranges[-1] = (ranges[-1][0], index)
        else:
            ranges.append((index, index))
    return ranges, told


def _plain_success(state: StepState) -> bool:
    """A step whose whole story is "succeeded at the first attempt": its id says enough."""
    return (
        state.status == "Succeeded"
        and state.attempts == 1
        and not state.outputs
        and state.statusReason is None
        and state.nextAttemptAt is None
        and state.enabled
    )
