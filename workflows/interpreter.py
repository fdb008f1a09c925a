"""Step semantics: how each kind of plan step runs inside a workflow.

Runs in the workflow sandbox, so it is deterministic: time from `workflow.now()`, concurrency from
asyncio tasks the workflow loop schedules, waits on durable timers and conditions. It reads the
RunBook and calls it; every change of the run's state is one of its methods. Dispatch on the
step kind is a `match` closed by `assert_never`, so a new kind is a type error until it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, assert_never

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
    from compiler import history
    from compiler import plan as p
    from compiler.expressions import (
        ExpressionError,
        evaluate,
        evaluate_condition,
        references,
        render,
    )
    from compiler.history import chunks_at_once, map_chunks, map_runs_in_chunks
    from workflows.contract.activities import (
        EVALUATE_POLICY,
        FAILURE_REASONS,
        RUN_STEP,
        STEP_FAILED,
        STORE_MAP_ITEMS,
        ArtifactRecord,
        MapItemsRef,
        MapItemsWrite,
        PolicyRequest,
        PolicyResult,
        RunStepRequest,
        RunStepResult,
    )
    from workflows.contract.names import CHUNK_WORKFLOW_TYPE, GROUP_WORKFLOW_TYPE
    from workflows.contract.state import ChunkInput, ChunkResult, Decision, MapGroupInput
    from workflows.local_activities import run_local_activity
    from workflows.map_levels import (
        MAP_RESULTS_TOO_LARGE,
        bit_indexes,
        counts_text,
        dense_outputs,
        group_id,
        item_counts,
        unpack_bits,
    )
    from workflows.pacing import CHUNK_START_COST, StartBudget
    from workflows.patches import (
        PATCH_HELD_ITEMS,
        PATCH_ITEMS_BY_REFERENCE,
        PATCH_MAP_LEVELS,
        PATCH_MAP_RANGES,
    )
    from workflows.run_book import RunBook, StepResult

POLICY_TIMEOUT = timedelta(seconds=60)
MAP_ITEMS_TIMEOUT = timedelta(seconds=60)
REGISTER_PER_TASK = 10_000
"""Item steps a map that fans out in levels registers per workflow task (about 0.1 s of work on
an idle 2-core box): a group's items are registered as it starts, over several tasks."""


@dataclass(frozen=True)
class Frame:
    """Where a step runs: the id prefix of its iteration and the loop variables in scope.

    What the iteration's steps produced is the RunBook's (`results(prefix)`), not the frame's.
    """

    prefix: str = ""
    vars: dict[str, Any] = field(default_factory=dict)
    parent: Frame | None = None

    def rid(self, step_id: str) -> str:
        return self.prefix + step_id

    def child(self, prefix: str, variables: dict[str, Any]) -> Frame:
        return Frame(prefix, {**self.vars, **variables}, self)


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


class Interpreter:
    def __init__(
        self,
        book: RunBook,
        *,
        notify: Callable[[], None] = lambda: None,
        fan_out: bool = True,
        between_steps: Callable[[bool], Awaitable[None]] | None = None,
    ) -> None:
        """`notify`: called when a gate opens or closes. `fan_out`: whether large maps may move
        into child workflows (not inside a chunk, which is one already). `between_steps`: awaited
        at each boundary between steps inside a parallel block, map, loop or conditional (the
        run's own top-level boundaries are PackRun's), told whether the run could continue as
        new there: nothing runs beside the step that just ended, and every enclosing step can
        pick up where it stands (a loop or conditional can; a parallel block, a map or a policy
        gate's `else` branch cannot)."""
        self.book = book
        self.plan = book.plan
        self.meta = book.meta
        self.notify = notify
        self.fan_out = fan_out
        self.between_steps = between_steps
        self.starts = StartBudget()
        self._concurrent: list[object] = []
        """One token per parallel block, map or policy branch under way, wherever it is."""

    # ----------------------------------------------------------------- scope

    def visible_steps(self, frame: Frame) -> Mapping[str, StepResult]:
        chain: list[Mapping[str, StepResult]] = []
        node: Frame | None = frame
        while node is not None and node.prefix:
            local = self.book.results(node.prefix)
            if local:
                chain.append(local)
            node = node.parent
        if not chain:
            return self.book.results()
        merged = dict(self.book.results())
        for local in reversed(chain):
            merged.update(local)
        return merged

    def scope(self, frame: Frame) -> dict[str, Any]:
        return {"inputs": self.plan.inputs, "steps": self.visible_steps(frame), **frame.vars}

    def _record(self, step: p.PlanStep, frame: Frame) -> None:
        self.book.record_result(frame.prefix, step.id)

    def _record_passed(self, step: p.PlanStep, frame: Frame) -> None:
        """A step passed again after continuing as new, with the steps inside it that share its
        iteration (a branch's, a parallel block's, a policy gate's `else`): each was recorded as
        it ended in the history before, so later steps of the iteration read them as they did
        there. (A loop's or map's own iterations have scopes of their own; a skipped block's
        steps, and steps that never ended, were never recorded.)"""
        status = self.book.step(frame.rid(step.id)).status
        if status in ("Pending", "Running"):
            return
        if status != "Skipped" and not isinstance(step, p.MapStep | p.LoopStep):
            for child in p.children(step):
                self._record_passed(child, frame)
        self._record(step, frame)

    # ----------------------------------------------------------------- sequencing

    async def run_sequence(self, steps: tuple[p.PlanStep, ...], frame: Frame) -> bool:
        for index, step in enumerate(steps):
            # Passed again after continuing as new: no boundary of this history's making, so no
            # reason to continue as new again before a step has run here.
            passed = self.book.finished(frame.rid(step.id)) is not None
            if not await self.run_step(step, frame):
                for rest in steps[index + 1 :]:
                    self.skip(rest, frame, "previous-step-failed")
                return False
            if not passed:
                await self._boundary(resumable=not self._concurrent)
        return True

    async def _boundary(self, *, resumable: bool) -> None:
        if self.between_steps is not None:
            await self.between_steps(resumable)

    @contextlib.contextmanager
    def _not_resumable(self) -> Iterator[None]:
        """While a block runs whose place cannot be carried across continue-as-new (steps side
        by side, or a policy gate's branch), no boundary anywhere in the run is resumable."""
        token = object()
        self._concurrent.append(token)
        try:
            yield
        finally:
            self._concurrent.remove(token)

    def skip(self, step: p.PlanStep, frame: Frame, reason: str) -> None:
        self.book.skip(frame.rid(step.id), reason)
        self._record(step, frame)

    async def run_step(self, step: p.PlanStep, frame: Frame) -> bool:
        """Run one step to a final status. Returns whether what follows may go on."""
        rid = frame.rid(step.id)
        done = self.book.finished(rid)
        if done is not None:
            # The run continued as new inside a step that holds this one, after this one ended:
            # walking the plan again, it is passed with what it recorded, not run again.
            self._record_passed(step, frame)
            return done.status != "Failed" or step.continueOnError
        # A loop or conditional under way when the run continued as new: its `when` held.
        resumed = rid in self.book.progress
        redrive = self.meta.redrive
        reused = redrive.reuse.get(rid) if redrive is not None else None
        if redrive is not None and reused is not None:
            # A redrive: this step succeeded in the run redriven; its outputs carry over.
            self.book.reuse(rid, reused.outputs, reused.attempts, redrive.of)
            self._record(step, frame)
            return True
        try:
            if (
                step.when is not None
                and not resumed
                and not evaluate_condition(step.when, self.scope(frame))
            ):
                self.skip(step, frame, "condition-false")
                return True
            ok = await self._dispatch(step, frame, rid)
        except StepFailure as failure:
            self.book.fail_step(rid, failure.reason, f"Step failed: {rid}: {failure}")
            ok = False
        except ExpressionError as exc:
            self.book.fail_step(rid, "expression-error", f"Step failed: {rid}: {exc}")
            ok = False
        self._record(step, frame)
        return ok or step.continueOnError

    async def _dispatch(self, step: p.PlanStep, frame: Frame, rid: str) -> bool:
        match step:
            case p.RunStep():
                return await self._run(step, frame, rid)
            case p.ParallelStep():
                return await self._parallel(step, frame, rid)
            case p.MapStep():
                return await self._map(step, frame, rid)
            case p.LoopStep():
                return await self._loop(step, frame, rid)
            case p.ConditionalStep():
                return await self._conditional(step, frame, rid)
            case p.ApprovalGateStep():
                return await self._approval_gate(step, rid)
            case p.PolicyGateStep():
                return await self._policy_gate(step, frame, rid)
            case _:
                assert_never(step)

    # ----------------------------------------------------------------- run

    async def _run(self, step: p.RunStep, frame: Frame, rid: str) -> bool:
        book = self.book
        attempt = 0
        while True:  # until an attempt succeeds or the last one fails (maxAttempts >= 1)
            attempt += 1
            await self.starts.take()
            started = workflow.now()
            book.begin_attempt(rid, attempt)
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
                book.record_outputs(rid, outputs)
                if attempt < step.maxAttempts:
                    await self._retry_wait(
                        rid, attempt, step.maxAttempts, step.backoffSeconds, message
                    )
                    continue
                book.fail_step(rid, reason, f"Step failed: {rid}: {message}")
                return False
            elapsed = (workflow.now() - started).total_seconds()
            if result.egressDenied:
                # The step shrugged the refusals off; its log still says what it was refused.
                book.log(
                    "step.egress-denied",
                    f"Egress refused: {rid}: {', '.join(result.egressDenied[:5])}",
                    level="warn",
                    step_id=rid,
                    refused=len(result.egressDenied),
                )
            book.complete_attempt(rid, result.outputs, result.artifacts, duration=f"{elapsed:.3f}s")
            return True

    async def _retry_wait(
        self, rid: str, attempt: int, max_attempts: int, backoff: int, message: str
    ) -> None:
        self.book.schedule_retry(rid, attempt, max_attempts, backoff, message)
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
        return self.book.finish_step(rid, ok, outputs)

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
            await self._boundary(resumable=False)
            return ok

        with self._not_resumable():
            results = await asyncio.gather(*(one(s, f) for s, f in jobs))
        return all(results) and not stopped

    def _items(self, source: str | tuple[Any, ...] | p.ItemsRange, frame: Frame) -> Sequence[Any]:
        if isinstance(source, tuple):
            return list(source)
        if isinstance(source, p.ItemsRange):
            return source.values()  # a range object: a million items cost no memory
        value = evaluate(source, self.scope(frame))
        if value is None:
            return []
        if not isinstance(value, list):
            raise StepFailure(
                "items-not-a-list", f"items must be a list, got {type(value).__name__}"
            )
        return value

    def _register_iterations(self, body: tuple[p.PlanStep, ...], rid: str, count: int) -> None:
        for index in range(count):
            self.book.register_tree(body, f"{rid}[{index}]::", rid, templated=True)

    async def _map(self, step: p.MapStep, frame: Frame, rid: str) -> bool:
        items = self._items(step.items, frame)
        self.book.transition(rid, "Running", items=len(items))
        if self.fan_out and map_runs_in_chunks(step, len(items)):
            # Iterations are registered a chunk at a time, as each chunk starts: registering
            # 100,000 at once would hold one workflow task for seconds.
            ok, outputs = await self._map_in_chunks(step, frame, rid, items)
        else:
            self._register_iterations((step.step,), rid, len(items))
            ok, outputs = await self.map_iterations(
                step.step, frame, rid, items, 0, step.maxParallel, step.continueOnError
            )
        return self.book.finish_step(rid, ok, {"results": outputs})

    async def map_iterations(
        self,
        template: p.PlanStep,
        frame: Frame,
        rid: str,
        items: Sequence[Any],
        start: int,
        max_parallel: int,
        continue_on_error: bool,
    ) -> tuple[bool, list[Any]]:
        frames = [
            frame.child(f"{rid}[{start + i}]::", {"item": item, "index": start + i})
            for i, item in enumerate(items)
        ]
        ok = await self._bounded([(template, f) for f in frames], max_parallel, continue_on_error)
        outputs = [self.book.results(f.prefix).get(template.id, {}).get("outputs") for f in frames]
        self.book.forget_results(f.prefix for f in frames)
        return ok, outputs

    async def _map_in_chunks(
        self, step: p.MapStep, frame: Frame, rid: str, items: Sequence[Any]
    ) -> tuple[bool, list[Any]]:
        chunks = map_chunks(items)
        gate = asyncio.Semaphore(chunks_at_once(step.maxParallel))
        outputs: list[Any] = [None] * len(items)
        stopped = False
        visible = self.visible_steps(frame)
        parent_id = workflow.info().workflow_id
        plan = chunk_plan(self.plan, step.step)
        counted = (
            (step.items.start, step.items.end, step.items.step)
            if isinstance(step.items, p.ItemsRange) and workflow.patched(PATCH_MAP_RANGES)
            else None
        )
        stored = None if counted else await self._store_items(rid, list(items))
        by_value = stored is None and counted is None
        if (
            not by_value
            and history.map_span(len(chunks)) > 1
            # New commands (groups instead of chunks): only for runs that started with this code.
            and workflow.patched(PATCH_MAP_LEVELS)
        ):
            template = ChunkInput(
                plan=plan,
                planHash=self.book.plan_hash,
                meta=self.meta,
                mapStepId=rid,
                template=step.step,
                startIndex=0,
                items=[],
                itemsFolder=stored.folder if stored else None,
                itemsRange=counted,
                rangeChunkSize=history.MAP_CHUNK_SIZE if counted else 0,
                vars=frame.vars,
                visibleSteps=visible,
                maxParallel=step.maxParallel,
                continueOnError=step.continueOnError,
            )
            return await self._map_in_levels(step, frame, rid, len(items), template)

        async def one(number: int, chunk: Sequence[Any]) -> bool:
            nonlocal stopped
            start = number * history.MAP_CHUNK_SIZE
            async with gate:
                await self.starts.take(CHUNK_START_COST)
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
                        items=list(chunk) if by_value else [],
                        itemsFolder=stored.folder if stored else None,
                        itemsRange=counted,
                        rangeChunkSize=history.MAP_CHUNK_SIZE if counted else 0,
                        chunkNumber=number,
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
            self.book.merge_items(
                rid, step.step.id, result.succeededItems, result.outputs, start, result.succeededAt
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

    async def _map_in_levels(
        self, step: p.MapStep, frame: Frame, rid: str, count: int, template: ChunkInput
    ) -> tuple[bool, list[Any]]:
        """A map of more chunks than one workflow should start: start groups of them
        (workflows.map_levels), each handing back one bounded result for its range of items."""
        size = history.MAP_CHUNK_SIZE
        total = history.map_chunk_count(count)
        span = history.map_span(total)
        at_once = chunks_at_once(step.maxParallel)
        groups_at_once = max(1, math.ceil(at_once / span))
        # Each group running runs its share of the chunks allowed at once, so the map as a whole
        # runs about `at_once` chunks (maxParallel items) at a time, not that many per group.
        share = max(1, math.ceil(at_once / groups_at_once))
        gate = asyncio.Semaphore(groups_at_once)
        # Registering a group's items (up to 50,000) in one workflow task could pass the
        # deadlock detector's 2 s on a busy worker: a slice per task, a few events per slice.
        registering = StartBudget(per_task=REGISTER_PER_TASK)
        outputs: list[Any] = [None] * count
        stopped = False
        parent_id = f"{workflow.info().workflow_id}/{rid}"
        # Held, the items cost a byte each and no workflow task registers them (no timers to
        # spread it over tasks): commands of their own, so only for runs that began with this.
        held = workflow.patched(PATCH_HELD_ITEMS)
        if held:
            self.book.hold_items(rid, step.step, count)

        async def skip(ranges: Sequence[tuple[int, int]]) -> None:
            if held:
                self.book.skip_items(rid, ranges, "previous-step-failed")
            else:
                await self._skip_items(step.step, frame, rid, ranges, registering)

        async def one(first: int, chunks: int) -> bool:
            nonlocal stopped
            lo, hi = first * size, min(count, (first + chunks) * size)
            async with gate:
                for begin in range(lo, hi, size) if not held else ():
                    end = min(hi, begin + size)
                    await registering.take(end - begin)
                    for index in range(begin, end):
                        self.book.register_tree(
                            (step.step,), f"{rid}[{index}]::", rid, templated=True
                        )
                await self.starts.take(CHUNK_START_COST)
                if stopped:
                    await skip([(lo, hi - 1)])
                    return True
                result: ChunkResult = await workflow.execute_child_workflow(
                    GROUP_WORKFLOW_TYPE,
                    MapGroupInput(
                        chunk=template.model_copy(update={"chunkNumber": first, "startIndex": lo}),
                        chunks=chunks,
                        chunkSize=size,
                        itemCount=count,
                        chunksAtOnce=min(share, chunks),
                        resultBytes=history.map_result_bytes(hi - lo, count),
                    ),
                    id=group_id(parent_id, first, chunks),
                    result_type=ChunkResult,
                    static_summary=f"{rid}: items {lo}..{hi - 1} in {chunks} chunks",
                )
            got = dense_outputs(result, lo, hi - lo)
            self.book.merge(
                result.steps, result.logs, result.artifacts, result.succeeded, result.succeededAt
            )
            self.book.merge_items(
                rid, step.step.id, result.succeededItems, got, lo, result.succeededAt
            )
            await skip(result.skippedItems)
            by_condition = bit_indexes(unpack_bits(result.skippedByCondition), lo, hi)
            if held:
                self.book.skip_items(
                    rid,
                    [(index, index) for index in by_condition],
                    "condition-false",
                    quiet=True,
                    stamp=result.succeededAt,
                )
            else:
                for index in by_condition:
                    self.skip(step.step, frame.child(f"{rid}[{index}]::", {}), "condition-false")
            self.book.log(
                "map.chunk",
                f"Items {lo}..{hi - 1} of {rid} done: " + counts_text(item_counts(result, rid)),
                level="info" if not result.failed else "warn",
                step_id=rid,
                chunks=f"{first}..{first + chunks - 1}",
            )
            outputs[lo:hi] = got
            if result.failed and not step.continueOnError:
                stopped = True
            return not result.failed

        try:
            results = await asyncio.gather(
                *(one(first, n) for first, n in history.map_children(0, total))
            )
        except ChildWorkflowError as exc:
            _reraise_cancel(exc)
            cause = exc.cause
            if isinstance(cause, ApplicationError) and cause.type == MAP_RESULTS_TOO_LARGE:
                raise StepFailure("map-results-too-large", cause.message) from None
            raise StepFailure("chunk-failed", f"map chunk failed: {cause or exc}") from None
        return all(results) and not stopped, outputs

    async def _skip_items(
        self,
        template: p.PlanStep,
        frame: Frame,
        rid: str,
        ranges: Sequence[tuple[int, int]],
        budget: StartBudget,
    ) -> None:
        """Items never started (an item before them failed): skipped, a slice per task."""
        for first, last in ranges:
            for begin in range(first, last + 1, history.MAP_CHUNK_SIZE):
                end = min(last + 1, begin + history.MAP_CHUNK_SIZE)
                await budget.take(end - begin)
                for index in range(begin, end):
                    self.skip(
                        template, frame.child(f"{rid}[{index}]::", {}), "previous-step-failed"
                    )

    async def _store_items(self, rid: str, items: list[Any]) -> MapItemsRef | None:
        """Store a fanned-out map's items once, so chunks are handed a reference and the parent's
        history holds the items only where they came from. None: hand them over by value (runs
        that began before this, or a store that cannot take them now)."""
        if not workflow.patched(PATCH_ITEMS_BY_REFERENCE):
            return None
        try:
            ref = await run_local_activity(
                STORE_MAP_ITEMS,
                MapItemsWrite(
                    runId=self.meta.runId,
                    tenant=self.meta.tenant,
                    mapStepId=rid,
                    chunkSize=history.MAP_CHUNK_SIZE,
                    items=items,
                ),
                result_type=MapItemsRef,
                budget=self.starts,
                start_to_close_timeout=MAP_ITEMS_TIMEOUT,
                retry_policy=RetryPolicy(maximum_attempts=3),
                summary=f"{rid}: store items",
            )
        except ActivityError as exc:
            _reraise_cancel(exc)
            return None
        return ref

    # ----------------------------------------------------------------- loop

    def _loop_items(self, step: p.LoopStep, frame: Frame) -> Sequence[Any]:
        if step.itemsRange is not None:
            start, end, stride = step.itemsRange
            return list(range(start, end, stride))
        if step.itemsStatic is not None:
            return list(step.itemsStatic)
        assert step.itemsExpression is not None
        return self._items(step.itemsExpression, frame)

    async def _loop(self, step: p.LoopStep, frame: Frame, rid: str) -> bool:
        # Evaluated again when the run continued as new inside the loop: what it reads (inputs,
        # steps that ended before it) was carried, so it is the same list.
        items = self._loop_items(step, frame)
        progress = self.book.progress.get(rid)
        if progress is None:
            if len(items) > step.maxIterations:
                raise StepFailure(
                    "max-iterations-exceeded",
                    f"{len(items)} items, more than maxIterations ({step.maxIterations})",
                )
            self.book.transition(rid, "Running", items=len(items))
            self._register_iterations(step.steps, rid, len(items))
            progress = self.book.begin_loop(rid, len(items))
        # Finished iterations are not walked again: their outputs are in the progress, reduced
        # to what the aggregation needs.
        for index in range(progress.nextIteration, len(items)):
            sub = frame.child(f"{rid}[{index}]::", {step.iterator: items[index], step.index: index})
            passed = await self.run_sequence(step.steps, sub)
            output = _iteration_output(step.steps, self.book.results(sub.prefix))
            self.book.iteration_done(rid, index, output, passed, step.aggregation)
            self.book.forget_results([sub.prefix])
            if not passed and not step.continueOnError:
                for later in range(index + 1, len(items)):
                    rest = frame.child(f"{rid}[{later}]::", {})
                    for body_step in step.steps:
                        self.skip(body_step, rest, "previous-step-failed")
                break
        return self.book.finish_step(
            rid, progress.ok, _aggregate(step.aggregation, progress.outputs)
        )

    # ----------------------------------------------------------------- conditional

    async def _conditional(self, step: p.ConditionalStep, frame: Frame, rid: str) -> bool:
        # The run continued as new inside the branch (a progress): the decision stands as taken.
        progress = self.book.progress.get(rid)
        chosen = progress.branch if progress is not None else self._choose_branch(step, frame, rid)
        taken = step.branches[chosen].steps if chosen is not None else step.elseSteps
        if progress is not None:
            # The branches not taken were skipped (and recorded) in the history before.
            for other in p.children(step):
                if other not in taken:
                    self._record_passed(other, frame)
        ok = await self.run_sequence(taken, frame)
        outputs: dict[str, Any] = {}
        if step.outputUnion:
            for s in taken:
                outputs.update(self.book.step(frame.rid(s.id)).outputs)
        outputs["branch"] = chosen if chosen is not None else "else"
        return self.book.finish_step(rid, ok, outputs)

    def _choose_branch(self, step: p.ConditionalStep, frame: Frame, rid: str) -> int | None:
        self.book.transition(rid, "Running")
        scope = self.scope(frame)
        chosen: int | None = None
        for index, branch in enumerate(step.branches):
            if evaluate_condition(branch.condition, scope):
                chosen = index
                break
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
        self.book.take_branch(rid, chosen)
        return chosen

    # ----------------------------------------------------------------- gates

    async def await_approval(self, approval_id: str, rid: str, message: str | None) -> Decision:
        """Wait on a durable condition for an approval to be settled; expiry is a durable timer."""
        book = self.book
        approval = book.approvals[approval_id]
        if approval.status in ("approved", "rejected", "expired"):
            # One decision per approval per run: a later gate naming it again reuses the decision.
            return approval.status
        approval, timeout = book.open_gate(rid, approval_id, message)
        self.notify()
        try:
            await workflow.wait_condition(lambda: approval.status != "pending", timeout=timeout)
        except TimeoutError:
            book.expire(approval_id)
        except asyncio.CancelledError:
            # The run is being cancelled; its ending refreshes what operators see. (No `finally`:
            # when a worker evicts a cached run, nothing here may touch the workflow clock.)
            book.close_gate(rid)
            raise
        book.close_gate(rid)
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
        result = PolicyResult(passed=False)
        for attempt in range(1, step.retryCount + 2):
            await self.starts.take()
            book.count_attempt(rid, attempt)
            result = await self._evaluate_policy(policy, frame, rid)
            if result.passed or attempt > step.retryCount:
                break
            backoff = max(1, self.plan.failure.backoffSeconds)
            await self._retry_wait(rid, attempt, step.retryCount + 1, backoff, "policy not met")
            book.resume_attempts(rid)
        meta: dict[str, Any] = {
            "policyId": policy.id,
            "policyVersion": policy.version,
            "detail": result.detail,
        }
        if result.passed:
            book.log("policy.passed", f"Policy passed: {policy.id}", step_id=rid, **meta)
            for other in step.elseSteps:
                self.skip(other, frame, "policy-passed")
            return book.finish_step(rid, True, {"passed": True})
        book.log("policy.failed", f"Policy failed: {policy.id}", level="warn", step_id=rid, **meta)
        book.record_outputs(rid, {"passed": False})
        if step.failureAction != "branch":
            for other in step.elseSteps:
                self.skip(other, frame, "branch-not-taken")
        if step.failureAction == "abort":
            raise StepFailure("policy-failed", f"policy {policy.id} failed")
        if step.failureAction == "warn":
            return book.finish_step(rid, True, {"passed": False}, reason="policy-warned")
        if step.failureAction == "requestOverride":
            assert step.approvalId is not None
            decision = await self.await_approval(
                step.approvalId, rid, f"Policy {policy.id} failed: override to continue"
            )
            book.record_outputs(rid, {"passed": False})
            return self._after_decision(step.approvalId, decision, rid, "override-")
        with self._not_resumable():  # where the policy stood is not carried
            ok = await self.run_sequence(step.elseSteps, frame)
        return book.finish_step(rid, ok, {"passed": False}, reason="policy-branch")

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
        """Evaluate the pack's object outputs (each set on the RunBook); their records."""
        scope = {"inputs": self.plan.inputs, "steps": self.book.results()}
        records = []
        for out in self.plan.outputs:
            if out.type != "object" or out.expression is None:
                continue
            stamp = self.book.stamp()
            try:
                value = evaluate(out.expression, scope)
                self.book.set_output(out.name, value)
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
        # A sandbox limit the step broke is its reason. Only failures recorded since the
        # activity sends one carry a third detail, so older histories replay as they ran.
        if cause.type == STEP_FAILED and len(details) > 2 and details[2] in FAILURE_REASONS:
            reason = details[2]
        return reason, cause.message, outputs
    if isinstance(cause, TemporalTimeoutError):
        return (
            "timed-out",
            f"timed out ({cause.type.name.lower() if cause.type else 'timeout'})",
            {},
        )
    return "executor-error", str(cause or exc), {}


def _iteration_output(
    body: tuple[p.PlanStep, ...], results: Mapping[str, StepResult]
) -> dict[str, Any]:
    """An iteration's outputs: those of the last body step that succeeded."""
    for step in reversed(body):
        result = results.get(step.id)
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
