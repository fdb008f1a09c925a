"""Step semantics: how each kind of plan step runs inside a workflow.

Runs in the workflow sandbox, so it is deterministic: time from `workflow.now()`, concurrency from
asyncio tasks the workflow loop schedules, waits on durable timers and conditions. All state
changes go through the RunBook.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    is_cancelled_exception,
)
from temporalio.exceptions import TimeoutError as TemporalTimeoutError

with workflow.unsafe.imports_passed_through():
    from compiler import plan as p
    from compiler.expressions import (
        ExpressionError,
        evaluate,
        evaluate_condition,
        references,
        render,
    )
    from compiler.history import MAP_CHUNK_SIZE, MAP_INLINE_LIMIT
    from workflows.contract.activities import (
        EVALUATE_POLICY,
        RUN_STEP,
        STEP_FAILED,
        ArtifactRecord,
        PolicyRequest,
        PolicyResult,
        RunStepRequest,
        RunStepResult,
    )
    from workflows.contract.names import CHUNK_WORKFLOW_TYPE
    from workflows.contract.state import ChunkInput, ChunkResult, Decision
    from workflows.run_book import TIMER, RunBook, iso

POLICY_TIMEOUT = timedelta(seconds=60)


@dataclass
class Frame:
    """Where a step runs: the id prefix of its iteration, loop variables, and iteration results."""

    prefix: str = ""
    vars: dict[str, Any] = field(default_factory=dict)
    local: dict[str, dict[str, Any]] = field(default_factory=dict)
    parent: Frame | None = None

    def rid(self, step_id: str) -> str:
        return self.prefix + step_id

    def child(self, prefix: str, variables: dict[str, Any]) -> Frame:
        return Frame(prefix, {**self.vars, **variables}, {}, self)


class StepFailure(Exception):
    """A step cannot go on; carries the status reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def chunk_plan(plan: p.Plan, template: p.PlanStep) -> p.Plan:
    """The plan a map's chunks get: without the inputs neither the template nor a policy names.
    A large map's items are usually such an input; every chunk's input (and the parent's history,
    once per chunk) would carry all of them again."""
    named = template.model_dump_json() + "".join(q.model_dump_json() for q in plan.policies)
    kept = {name: value for name, value in plan.inputs.items() if name in named}
    return plan.model_copy(update={"inputs": kept})


def has_gate(step: p.PlanStep) -> bool:
    """Whether a subtree waits for people: such a map cannot move into child workflows."""
    return any(
        isinstance(s, p.ApprovalGateStep)
        or (isinstance(s, p.PolicyGateStep) and s.failureAction == "requestOverride")
        for s in p.walk([step])
    )


class Interpreter:
    def __init__(
        self,
        book: RunBook,
        *,
        results: dict[str, dict[str, Any]] | None = None,
        notify: Callable[[], None] = lambda: None,
        fan_out: bool = True,
    ) -> None:
        self.book = book
        self.plan = book.plan
        self.meta = book.meta
        self.results: dict[str, dict[str, Any]] = results if results is not None else {}
        self.notify = notify
        self.fan_out = fan_out
        self.open_gates: dict[str, str] = {}

    # ----------------------------------------------------------------- scope

    def visible_steps(self, frame: Frame) -> dict[str, dict[str, Any]]:
        chain: list[dict[str, dict[str, Any]]] = []
        node: Frame | None = frame
        while node is not None:
            if node.local:
                chain.append(node.local)
            node = node.parent
        if not chain:
            return self.results
        merged = dict(self.results)
        for local in reversed(chain):
            merged.update(local)
        return merged

    def scope(self, frame: Frame) -> dict[str, Any]:
        return {"inputs": self.plan.inputs, "steps": self.visible_steps(frame), **frame.vars}

    def _record(self, step: p.PlanStep, frame: Frame) -> None:
        state = self.book.step(frame.rid(step.id))
        result = {"status": state.status, "outputs": state.outputs}
        if frame.prefix:
            frame.local[step.id] = result
        else:
            self.results[step.id] = result

    # ----------------------------------------------------------------- sequencing

    async def run_sequence(self, steps: tuple[p.PlanStep, ...], frame: Frame) -> bool:
        for index, step in enumerate(steps):
            if not await self.run_step(step, frame):
                for rest in steps[index + 1 :]:
                    self.skip(rest, frame, "previous-step-failed")
                return False
        return True

    def skip(self, step: p.PlanStep, frame: Frame, reason: str) -> None:
        rid = frame.rid(step.id)
        if self.book.step(rid).status in ("Pending", "Running"):
            self.book.transition(rid, "Skipped", reason=reason)
        self.book.skip_subtree(rid, reason)
        self._record(step, frame)

    async def run_step(self, step: p.PlanStep, frame: Frame) -> bool:
        """Run one step to a final status. Returns whether what follows may go on."""
        rid = frame.rid(step.id)
        redrive = self.meta.redrive
        reused = redrive.reuse.get(rid) if redrive is not None else None
        if redrive is not None and reused is not None:
            # A redrive: this step succeeded in the run redriven; its outputs carry over.
            state = self.book.step(rid)
            state.outputs = dict(reused.outputs)
            state.attempts = reused.attempts
            self.book.transition(rid, "Succeeded", reason="reused", redriveOf=redrive.of)
            self._record(step, frame)
            return True
        try:
            if step.when is not None and not evaluate_condition(step.when, self.scope(frame)):
                self.skip(step, frame, "condition-false")
                return True
            ok = await self._dispatch(step, frame, rid)
        except StepFailure as failure:
            self.book.transition(
                rid, "Failed", reason=failure.reason, message=f"Step failed: {rid}: {failure}"
            )
            self.book.skip_subtree(rid, failure.reason)
            ok = False
        except ExpressionError as exc:
            self.book.transition(
                rid, "Failed", reason="expression-error", message=f"Step failed: {rid}: {exc}"
            )
            self.book.skip_subtree(rid, "expression-error")
            ok = False
        self._record(step, frame)
        return ok or step.continueOnError

    async def _dispatch(self, step: p.PlanStep, frame: Frame, rid: str) -> bool:
        if isinstance(step, p.RunStep):
            return await self._run(step, frame, rid)
        if isinstance(step, p.ParallelStep):
            return await self._parallel(step, frame, rid)
        if isinstance(step, p.MapStep):
            return await self._map(step, frame, rid)
        if isinstance(step, p.LoopStep):
            return await self._loop(step, frame, rid)
        if isinstance(step, p.ConditionalStep):
            return await self._conditional(step, frame, rid)
        if isinstance(step, p.ApprovalGateStep):
            return await self._approval_gate(step, rid)
        return await self._policy_gate(step, frame, rid)

    def _finish(
        self, rid: str, ok: bool, outputs: dict[str, Any], reason: str | None = None
    ) -> bool:
        state = self.book.step(rid)
        state.outputs = outputs
        if ok:
            self.book.transition(rid, "Succeeded", reason=reason)
        else:
            self.book.transition(rid, "Failed", reason=reason or "child-failed")
        return ok

    # ----------------------------------------------------------------- run

    async def _run(self, step: p.RunStep, frame: Frame, rid: str) -> bool:
        book = self.book
        state = book.step(rid)
        for attempt in range(1, step.maxAttempts + 1):
            state.attempts = attempt
            started = workflow.now()
            book.transition(rid, "Running", attempt=attempt if attempt > 1 else None)
            rendered = render(step.with_, self.scope(frame))
            request = RunStepRequest(
                runId=self.meta.runId,
                tenant=self.meta.tenant,
                stepId=rid,
                uses=step.uses,
                with_=rendered,
                secrets=list(step.secrets),
                timeoutSeconds=step.timeoutSeconds,
                sandbox=self.plan.sandbox,
                attempt=attempt,
            )
            try:
                result = await workflow.execute_activity(
                    RUN_STEP,
                    request,
                    result_type=RunStepResult,
                    # The executor enforces the step's own timeout; this one only catches a lost
                    # worker that stopped heartbeating without being noticed.
                    start_to_close_timeout=timedelta(seconds=step.timeoutSeconds + 30),
                    heartbeat_timeout=timedelta(seconds=self.meta.heartbeatTimeoutSeconds),
                    retry_policy=RetryPolicy(
                        maximum_attempts=self.meta.activityAttempts,
                        non_retryable_error_types=[STEP_FAILED],
                    ),
                    summary=f"{rid} ({step.uses})",
                )
            except ActivityError as exc:
                _reraise_cancel(exc)
                reason, message, outputs = _activity_failure(exc)
                state.outputs = outputs
                if attempt < step.maxAttempts:
                    await self._retry_wait(
                        rid, attempt, step.maxAttempts, step.backoffSeconds, message
                    )
                    continue
                book.transition(
                    rid, "Failed", reason=reason, message=f"Step failed: {rid}: {message}"
                )
                return False
            state.outputs = result.outputs
            book.artifacts.extend(result.artifacts)
            elapsed = (workflow.now() - started).total_seconds()
            book.transition(rid, "Succeeded", duration=f"{elapsed:.3f}s")
            return True
        return False  # unreachable: the loop returns on the last attempt

    async def _retry_wait(
        self, rid: str, attempt: int, max_attempts: int, backoff: int, message: str
    ) -> None:
        book = self.book
        book.transition(rid, "Pending", reason="retry-scheduled", quiet=True)
        next_at = workflow.now() + timedelta(seconds=backoff)
        book.step(rid).nextAttemptAt = iso(next_at)
        book.log(
            "step.retrying",
            f"Step failed, retrying in {backoff}s: {rid} "
            f"(attempt {attempt} of {max_attempts}): {message}",
            level="warn",
            step_id=rid,
            nextAttemptAt=iso(next_at),
        )
        if backoff > 0:
            # A durable timer: the wait survives worker restarts and shows in history.
            await workflow.sleep(timedelta(seconds=backoff), summary=f"retry {rid}")

    # ----------------------------------------------------------------- parallel and map

    async def _parallel(self, step: p.ParallelStep, frame: Frame, rid: str) -> bool:
        self.book.transition(rid, "Running")
        ok = await self._bounded(
            [(child, frame) for child in step.steps], step.maxParallel, step.continueOnError
        )
        outputs = {c.id: self.book.step(frame.rid(c.id)).outputs for c in step.steps}
        return self._finish(rid, ok, outputs)

    async def _bounded(
        self, jobs: list[tuple[p.PlanStep, Frame]], limit: int, continue_on_error: bool
    ) -> bool:
        """Run steps at most `limit` at a time; after a failure start no more unless told to."""
        gate = asyncio.Semaphore(max(1, limit))
        stopped = False

        async def one(step: p.PlanStep, where: Frame) -> bool:
            nonlocal stopped
            async with gate:
                if stopped:
                    self.skip(step, where, "previous-step-failed")
                    return True
                ok = await self.run_step(step, where)
                if not ok and not continue_on_error:
                    stopped = True
                return ok

        results = await asyncio.gather(*(one(s, f) for s, f in jobs))
        return all(results) and not stopped

    def _items(self, source: str | tuple[Any, ...], frame: Frame) -> list[Any]:
        if isinstance(source, tuple):
            return list(source)
        value = evaluate(source, self.scope(frame))
        if value is None:
            return []
        if not isinstance(value, list):
            raise StepFailure(
                "items-not-a-list", f"items must be a list, got {type(value).__name__}"
            )
        return value

    def _register_iterations(
        self, body: tuple[p.PlanStep, ...], rid: str, count: int, start: int = 0
    ) -> None:
        for index in range(start, start + count):
            self.book.register_tree(body, f"{rid}[{index}]::", rid, templated=True)

    async def _map(self, step: p.MapStep, frame: Frame, rid: str) -> bool:
        items = self._items(step.items, frame)
        self.book.transition(rid, "Running", items=len(items))
        if self.fan_out and len(items) > MAP_INLINE_LIMIT and not has_gate(step.step):
            # Iterations are registered a chunk at a time, as each chunk starts: registering
            # 100,000 at once would hold one workflow task for seconds.
            ok, outputs = await self._map_in_chunks(step, frame, rid, items)
        else:
            self._register_iterations((step.step,), rid, len(items))
            ok, outputs = await self.map_iterations(
                step.step, frame, rid, items, 0, step.maxParallel, step.continueOnError
            )
        return self._finish(rid, ok, {"results": outputs})

    async def map_iterations(
        self,
        template: p.PlanStep,
        frame: Frame,
        rid: str,
        items: list[Any],
        start: int,
        max_parallel: int,
        continue_on_error: bool,
    ) -> tuple[bool, list[Any]]:
        frames = [
            frame.child(f"{rid}[{start + i}]::", {"item": item, "index": start + i})
            for i, item in enumerate(items)
        ]
        ok = await self._bounded([(template, f) for f in frames], max_parallel, continue_on_error)
        outputs = [f.local.get(template.id, {}).get("outputs") for f in frames]
        return ok, outputs

    async def _map_in_chunks(
        self, step: p.MapStep, frame: Frame, rid: str, items: list[Any]
    ) -> tuple[bool, list[Any]]:
        chunks = [items[i : i + MAP_CHUNK_SIZE] for i in range(0, len(items), MAP_CHUNK_SIZE)]
        gate = asyncio.Semaphore(max(1, math.ceil(step.maxParallel / MAP_CHUNK_SIZE)))
        outputs: list[Any] = [None] * len(items)
        stopped = False
        visible = self.visible_steps(frame)
        parent_id = workflow.info().workflow_id
        plan = chunk_plan(self.plan, step.step)

        async def one(number: int, chunk: list[Any]) -> bool:
            nonlocal stopped
            start = number * MAP_CHUNK_SIZE
            async with gate:
                for index in range(start, start + len(chunk)):
                    self.book.register_tree((step.step,), f"{rid}[{index}]::", rid, templated=True)
                if stopped:
                    for index in range(start, start + len(chunk)):
                        sub = frame.child(f"{rid}[{index}]::", {})
                        self.skip(step.step, sub, "previous-step-failed")
                    return True
                result: ChunkResult = await workflow.execute_child_workflow(
                    CHUNK_WORKFLOW_TYPE,
                    ChunkInput(
                        plan=plan,
                        planHash=self.book.plan_hash,
                        meta=self.meta,
                        mapStepId=rid,
                        template=step.step,
                        startIndex=start,
                        items=chunk,
                        vars=frame.vars,
                        visibleSteps=visible,
                        maxParallel=step.maxParallel,
                        continueOnError=step.continueOnError,
                    ),
                    id=f"{parent_id}/{rid}/chunk-{number}",
                    result_type=ChunkResult,
                    static_summary=f"{rid}: items {start}..{start + len(chunk) - 1}",
                )
            self.book.merge(
                result.steps, result.logs, result.artifacts, result.succeeded, result.succeededAt
            )
            counts: dict[str, int] = {}
            for state in result.steps:
                if state.parentId == rid:
                    counts[state.status] = counts.get(state.status, 0) + 1
            self.book.log(
                "map.chunk",
                f"Items {start}..{start + len(chunk) - 1} of {rid} done: "
                + ", ".join(f"{n} {status.lower()}" for status, n in sorted(counts.items())),
                level="info" if not result.failed else "warn",
                step_id=rid,
                chunk=number,
            )
            outputs[start : start + len(chunk)] = result.outputs
            if result.failed and not step.continueOnError:
                stopped = True
            return not result.failed

        try:
            results = await asyncio.gather(*(one(n, c) for n, c in enumerate(chunks)))
        except ChildWorkflowError as exc:
            _reraise_cancel(exc)
            raise StepFailure("chunk-failed", f"map chunk failed: {exc.cause or exc}") from None
        return all(results) and not stopped, outputs

    # ----------------------------------------------------------------- loop

    def _loop_items(self, step: p.LoopStep, frame: Frame) -> list[Any]:
        if step.itemsRange is not None:
            start, end, stride = step.itemsRange
            return list(range(start, end, stride))
        if step.itemsStatic is not None:
            return list(step.itemsStatic)
        assert step.itemsExpression is not None
        return self._items(step.itemsExpression, frame)

    async def _loop(self, step: p.LoopStep, frame: Frame, rid: str) -> bool:
        items = self._loop_items(step, frame)
        if len(items) > step.maxIterations:
            raise StepFailure(
                "max-iterations-exceeded",
                f"{len(items)} items, more than maxIterations ({step.maxIterations})",
            )
        self.book.transition(rid, "Running", items=len(items))
        self._register_iterations(step.steps, rid, len(items))
        outputs: list[dict[str, Any]] = []
        ok = True
        for index, item in enumerate(items):
            sub = frame.child(f"{rid}[{index}]::", {step.iterator: item, step.index: index})
            passed = await self.run_sequence(step.steps, sub)
            outputs.append(_iteration_output(step.steps, sub))
            if not passed:
                ok = False
                if not step.continueOnError:
                    for later in range(index + 1, len(items)):
                        rest = frame.child(f"{rid}[{later}]::", {})
                        for body_step in step.steps:
                            self.skip(body_step, rest, "previous-step-failed")
                    break
        return self._finish(rid, ok, _aggregate(step.aggregation, outputs))

    # ----------------------------------------------------------------- conditional

    async def _conditional(self, step: p.ConditionalStep, frame: Frame, rid: str) -> bool:
        self.book.transition(rid, "Running")
        scope = self.scope(frame)
        chosen: int | None = None
        for index, branch in enumerate(step.branches):
            if evaluate_condition(branch.condition, scope):
                chosen = index
                break
        taken = step.branches[chosen].steps if chosen is not None else step.elseSteps
        for index, branch in enumerate(step.branches):
            if index != chosen:
                for other in branch.steps:
                    self.skip(other, frame, "branch-not-taken")
        if chosen is not None:
            for other in step.elseSteps:
                self.skip(other, frame, "branch-not-taken")
        self.book.log(
            "step.branch",
            f"Branch taken: {rid} -> {chosen if chosen is not None else 'else'}",
            step_id=rid,
        )
        ok = await self.run_sequence(taken, frame)
        outputs: dict[str, Any] = {}
        if step.outputUnion:
            for s in taken:
                outputs.update(self.book.step(frame.rid(s.id)).outputs)
        outputs["branch"] = chosen if chosen is not None else "else"
        return self._finish(rid, ok, outputs)

    # ----------------------------------------------------------------- gates

    async def await_approval(self, approval_id: str, rid: str, message: str | None) -> Decision:
        """Wait on a durable condition for an approval to be settled; expiry is a durable timer."""
        book = self.book
        approval = book.approvals[approval_id]
        if approval.status in ("approved", "rejected", "expired"):
            # One decision per approval per run: a later gate naming it again reuses the decision.
            return approval.status
        spec = self.plan.approval(approval_id)
        assert spec is not None  # the compiler checked that every gate names a declared approval
        now = workflow.now()
        approval.status = "pending"
        approval.stepId = rid
        approval.requestedAt = iso(now)
        approval.message = message or spec.message
        approval.missing = book.seats(approval).describe_missing()
        timeout = None
        if spec.expiresAfterSeconds:
            timeout = timedelta(seconds=spec.expiresAfterSeconds)
            approval.expiresAt = iso(now + timeout)
        book.transition(rid, "Pending", reason="awaiting-approval", quiet=True)
        book.log(
            "gate.awaiting",
            f"Awaiting approval: {approval_id}",
            level="warn",
            step_id=rid,
            approvalId=approval_id,
            requiredApprovals=spec.requiredApprovals,
            grants=",".join(spec.grants) or None,
            expiresAt=approval.expiresAt,
            gateMessage=approval.message,
        )
        self.open_gates[rid] = approval_id
        self.notify()
        try:
            await workflow.wait_condition(lambda: approval.status != "pending", timeout=timeout)
        except TimeoutError:
            book.settle(approval, "expired", approvalId=approval_id, actorId=TIMER)
        except asyncio.CancelledError:
            # The run is being cancelled; its ending refreshes what operators see. (No `finally`:
            # when a worker evicts a cached run, nothing here may touch the workflow clock.)
            self.open_gates.pop(rid, None)
            raise
        self.open_gates.pop(rid, None)
        self.notify()
        return approval.status  # type: ignore[return-value]

    def _after_decision(self, approval_id: str, decision: Decision, rid: str, prefix: str) -> bool:
        spec = self.plan.approval(approval_id)
        if decision == "expired" and spec is not None and spec.onExpiry == "approve":
            decision = "approved"
        if decision == "approved":
            self.book.transition(rid, "Succeeded", reason=f"{prefix}approved")
            return True
        raise StepFailure(f"approval-{decision}", f"approval {approval_id} {decision}")

    async def _approval_gate(self, step: p.ApprovalGateStep, rid: str) -> bool:
        decision = await self.await_approval(step.approvalId, rid, step.message)
        return self._after_decision(step.approvalId, decision, rid, "")

    async def _policy_gate(self, step: p.PolicyGateStep, frame: Frame, rid: str) -> bool:
        book = self.book
        policy = self.plan.policy(step.policyId)
        assert policy is not None
        book.transition(rid, "Running")
        state = book.step(rid)
        result = PolicyResult(passed=False)
        for attempt in range(1, step.retryCount + 2):
            state.attempts = attempt
            result = await self._evaluate_policy(policy, frame, rid)
            if result.passed or attempt > step.retryCount:
                break
            backoff = max(1, self.plan.failure.backoffSeconds)
            await self._retry_wait(rid, attempt, step.retryCount + 1, backoff, "policy not met")
            book.transition(rid, "Running", quiet=True)
        meta: dict[str, Any] = {
            "policyId": policy.id,
            "policyVersion": policy.version,
            "detail": result.detail,
        }
        if result.passed:
            book.log("policy.passed", f"Policy passed: {policy.id}", step_id=rid, **meta)
            for other in step.elseSteps:
                self.skip(other, frame, "policy-passed")
            return self._finish(rid, True, {"passed": True})
        book.log("policy.failed", f"Policy failed: {policy.id}", level="warn", step_id=rid, **meta)
        state.outputs = {"passed": False}
        if step.failureAction != "branch":
            for other in step.elseSteps:
                self.skip(other, frame, "branch-not-taken")
        if step.failureAction == "abort":
            raise StepFailure("policy-failed", f"policy {policy.id} failed")
        if step.failureAction == "warn":
            return self._finish(rid, True, {"passed": False}, reason="policy-warned")
        if step.failureAction == "requestOverride":
            assert step.approvalId is not None
            decision = await self.await_approval(
                step.approvalId, rid, f"Policy {policy.id} failed: override to continue"
            )
            book.step(rid).outputs = {"passed": False}
            return self._after_decision(step.approvalId, decision, rid, "override-")
        ok = await self.run_sequence(step.elseSteps, frame)
        return self._finish(rid, ok, {"passed": False}, reason="policy-branch")

    async def _evaluate_policy(self, policy: p.PolicySpec, frame: Frame, rid: str) -> PolicyResult:
        scope = self.scope(frame)
        if isinstance(policy.condition, str):
            # Send only what the condition reads, not every step's outputs.
            wanted = {r.name for r in references(policy.condition) if r.root == "steps" and r.name}
            scope["steps"] = {k: v for k, v in scope["steps"].items() if k in wanted}
        try:
            result: PolicyResult = await workflow.execute_activity(
                EVALUATE_POLICY,
                PolicyRequest(
                    runId=self.meta.runId,
                    policyId=policy.id,
                    policyVersion=policy.version,
                    condition=policy.condition,
                    scope=scope,
                ),
                result_type=PolicyResult,
                start_to_close_timeout=POLICY_TIMEOUT,
                retry_policy=RetryPolicy(
                    maximum_attempts=self.meta.activityAttempts,
                    non_retryable_error_types=[STEP_FAILED],
                ),
                summary=f"{rid} (policy {policy.id})",
            )
            return result
        except ActivityError as exc:
            _reraise_cancel(exc)
            _, message, _ = _activity_failure(exc)
            raise StepFailure(
                "policy-error", f"policy {policy.id} could not be evaluated: {message}"
            ) from None

    # ----------------------------------------------------------------- pack outputs

    def object_outputs(self) -> list[ArtifactRecord]:
        scope = {"inputs": self.plan.inputs, "steps": self.results}
        records = []
        for out in self.plan.outputs:
            if out.type != "object" or out.expression is None:
                continue
            stamp = self.book.stamp()
            try:
                value = evaluate(out.expression, scope)
                self.book.outputs[out.name] = value
                records.append(
                    ArtifactRecord(
                        name=out.name,
                        type="object",
                        status="captured",
                        capturedAt=stamp,
                        expressionJson=json.dumps(value, sort_keys=True),
                    )
                )
            except (ExpressionError, TypeError, ValueError) as exc:
                records.append(
                    ArtifactRecord(name=out.name, type="object", status="failed", notes=str(exc))
                )
        return records


def _reraise_cancel(exc: BaseException) -> None:
    """An activity or child cancelled because the run is being cancelled is not a step failure."""
    if is_cancelled_exception(exc):
        raise asyncio.CancelledError from exc


def _activity_failure(exc: ActivityError) -> tuple[str, str, dict[str, Any]]:
    """(status reason, message, outputs so far) of a failed activity."""
    cause = exc.cause
    if isinstance(cause, ApplicationError):
        details = cause.details
        outputs = details[0] if details and isinstance(details[0], dict) else {}
        reason = "step-failed" if cause.type == STEP_FAILED else "executor-error"
        return reason, cause.message, outputs
    if isinstance(cause, TemporalTimeoutError):
        return (
            "timed-out",
            f"timed out ({cause.type.name.lower() if cause.type else 'timeout'})",
            {},
        )
    return "executor-error", str(cause or exc), {}


def _iteration_output(body: tuple[p.PlanStep, ...], frame: Frame) -> dict[str, Any]:
    """An iteration's outputs: those of the last body step that succeeded."""
    for step in reversed(body):
        result = frame.local.get(step.id)
        if result and result["status"] == "Succeeded":
            return dict(result["outputs"])
    return {}


def _aggregate(mode: str, outputs: list[dict[str, Any]]) -> dict[str, Any]:
    if mode == "collect":
        return {"results": outputs}
    if mode == "merge":
        merged: dict[str, Any] = {}
        for out in outputs:
            merged.update(out)
        return merged
    if mode == "first":
        return dict(outputs[0]) if outputs else {}
    if mode == "last":
        return dict(outputs[-1]) if outputs else {}
    return {}
