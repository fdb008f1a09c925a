"""The run's state: one object, its one writer, read by the queries.

Every change of a step, an approval, the log or the run's status is a method here named for
what happens (`begin_attempt`, `record_outputs`, `open_gate`, `request_cancel`, ...); the
Interpreter and PackRun read and call, and never assign (tests/workflows/test_one_writer.py
holds them to it). A step's status moves through `transition`, which also writes the log entry,
so state and log never disagree. Timestamps come from the clock the workflow hands in
(`workflow.now()`), which keeps this module deterministic.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from compiler import plan as p
from compiler.quorum import Seats, Voter, count_seats
from workflows.contract.activities import ArtifactRecord
from workflows.contract.initial import approval_states, step_states
from workflows.contract.log_chain import GENESIS, entry_hash
from workflows.contract.refusals import Refusal
from workflows.contract.state import (
    TERMINAL_RUN_STATUSES,
    ApprovalDecisionRecord,
    ApprovalOutcome,
    ApprovalSignal,
    ApprovalState,
    CarriedState,
    Decision,
    LogEntry,
    LogLevel,
    LogSegment,
    LogsPage,
    PagedSteps,
    RunMeta,
    RunStateSnapshot,
    RunStatus,
    StateQuery,
    StepProgress,
    StepSegment,
    StepState,
    StepStatus,
    Via,
)
from workflows.contract.times import rfc3339
from workflows.held_items import HeldItems

DECIDED = frozenset({"approved", "rejected", "expired"})
ANONYMOUS = "anonymous"
"""The actor of auth-off dev mode: exempt from `allowRequester`, so one person can try a pack."""
TIMER = "timer"
"""Who settles an approval when its deadline passes: never a person."""
SEGMENTS_PER_PAGE = 20
TERMINAL_STEP = frozenset({"Succeeded", "Failed", "Skipped"})
PAGE_MIN_STEPS = 200
"""A loop's finished iterations are paged out once they hold this many step states: fewer are
carried as they are (a page per small loop would cost more than it saves)."""

_EVENT_FOR_STATUS: dict[str, tuple[str, LogLevel, str]] = {
    "Running": ("step.started", "info", "Starting step"),
    "Succeeded": ("step.completed", "info", "Step completed"),
    "Failed": ("step.failed", "error", "Step failed"),
    "Skipped": ("step.skipped", "info", "Step skipped"),
}


@dataclass(frozen=True)
class IterationPage:
    """Finished iterations `first..last` of a loop, to page out of the run: their states in
    tree order (as dicts), with `{"segment": storedPath}` where one of them holds a loop whose
    own iterations were paged out before (the store writes those states in its place)."""

    loop_id: str
    first: int
    last: int
    roots: tuple[str, ...]
    entries: list[dict[str, Any]]


StepResult = dict[str, Any]
"""What expressions see of a finished step: `{"status": ..., "outputs": {...}}`."""


MIN_CARRIED_STEP_BYTES = 100
"""No step state serialises to fewer bytes (its id, kind, status and the defaults are always
written), so a count of states times this is a floor of the state carried across continue-as-new."""


class RunBook:
    """Steps, approvals, logs and artifacts of one run (or of one map chunk)."""

    def __init__(
        self,
        plan: p.Plan,
        plan_hash: str,
        meta: RunMeta,
        now: Callable[[], datetime],
        carried: CarriedState | None = None,
        visible: Mapping[str, StepResult] | None = None,
    ) -> None:
        """`carried`: the state a run continued as new with. `visible`: for a map chunk, the
        parent's steps its expressions may read."""
        self.plan = plan
        self.plan_hash = plan_hash
        self.meta = meta
        self._now = now
        stamp = rfc3339(now())
        self.status: RunStatus = "pending"
        self.created_at = meta.requestedAt or stamp
        self.updated_at = stamp
        self.steps: dict[str, StepState] = {}
        self.children: dict[str, list[str]] = {}
        self.roots: list[str] = []
        """The top-level steps, in order: where a walk of the tree starts."""
        self.held: dict[str, HeldItems] = {}
        """Maps in levels, by id: their items held as a status each, registered in `steps` only
        when an item has more to say (workflows/held_items.py)."""
        self.approvals: dict[str, ApprovalState] = {a.approvalId: a for a in approval_states(plan)}
        if meta.redrive is not None:
            # Decided approvals of the run redriven (the API sends them only for an equal planHash).
            self.approvals.update({a.approvalId: a for a in meta.redrive.approvals})
        self.logs: list[LogEntry] = []
        """The entries kept in the workflow: those after `paged_through`."""
        self.log_segments: list[LogSegment] = []
        self.paged_through = 0
        """Entries 1..paged_through are in the artifact store (`log_segments`)."""
        self.paged_head: str | None = None
        """The chain hash of entry `paged_through`, which the next entry chains from."""
        self._listeners: list[Callable[[LogEntry], None]] = []
        self.artifacts: list[ArtifactRecord] = []
        self.outputs: dict[str, Any] = {}
        self.error: str | None = None
        self.cancel_requested = False
        self.cancelled_through_temporal = False
        """Temporal's own cancel request (the Web UI's button), not our `cancel` signal."""
        self.temporal_cancel_follows = False
        """Our `cancel` signal said Temporal's cancel request comes next (the API sends both),
        so the run waits for it to close its workflow as Canceled."""
        self.next_step_index = 0
        self.open_gates: dict[str, str] = {}
        """Steps waiting for a decision now, with the approval each waits on."""
        self._scopes: dict[str, dict[str, StepResult]] = {"": dict(visible or {})}
        """What expressions see of finished steps, per iteration prefix ("" for the run's own)."""
        self.progress: dict[str, StepProgress] = {}
        """Loops and conditionals under way: where each stands (carried across continue-as-new)."""
        self.step_segments: list[StepSegment] = []
        """Finished iterations of long loops, paged out to the artifact store, in tree order
        per loop (the state query says where they go; the API reads them back)."""
        self.paged_steps = 0
        """How many step states `step_segments` hold."""
        self.resuming = False
        """This history continued as new inside a step: the plan is walked again from the top
        step under way, and steps already finished are not run again."""
        self._carry_warned = False
        self.carry_refused_at: int | None = None
        """The history length when the state was last too large to carry."""
        self._paging_warned = False
        if carried is not None:
            self.status = carried.status
            self.created_at = carried.createdAt
            self.updated_at = carried.updatedAt
            for state in carried.steps:
                self._add(state)
            self.approvals = {a.approvalId: a for a in carried.approvals}
            self.logs = list(carried.logs)
            self.log_segments = list(carried.logSegments)
            self.paged_through = carried.logsPagedThrough
            self.paged_head = carried.logsPagedHead
            if any(entry.hash is None for entry in self.logs):
                # Carried by a run that began before the log was chained: chain it from the start.
                entries, self.logs = self.logs, []
                for entry in entries:
                    self._chain(entry)
            self.artifacts = list(carried.artifacts)
            self.cancel_requested = carried.cancelRequested
            self.next_step_index = carried.nextStepIndex
            self.progress = dict(carried.progress)
            self.resuming = bool(carried.progress)
            self.step_segments = list(carried.stepSegments)
            self.paged_steps = sum(segment.count for segment in self.step_segments)
            self._register_unbegun()
            self._scopes[""] = {
                s.stepId: {"status": s.status, "outputs": s.outputs}
                for s in carried.steps
                # Walked again, the run records each finished step as it passes it; a step not
                # finished yet was not in scope when the run continued as new.
                if s.templateId is None and (not self.resuming or s.status in TERMINAL_STEP)
            }

    # ----------------------------------------------------------------- clock and log

    def _chain(self, entry: LogEntry) -> LogEntry:
        """Append `entry` to the log with its chain hash (contract.log_chain)."""
        previous = self.logs[-1].hash if self.logs else self.paged_head
        chained = entry.model_copy(
            update={"hash": entry_hash(previous or GENESIS, entry.model_dump(mode="json"))}
        )
        self.logs.append(chained)
        return chained

    @property
    def log_chain_head(self) -> str:
        return (self.logs[-1].hash if self.logs else self.paged_head) or GENESIS

    def stamp(self) -> str:
        return rfc3339(self._now())

    def log(
        self,
        event: str,
        message: str,
        *,
        level: LogLevel = "info",
        step_id: str | None = None,
        **metadata: Any,
    ) -> LogEntry:
        entry = LogEntry(
            sequence=self.paged_through + len(self.logs) + 1,
            timestamp=self.stamp(),
            level=level,
            eventType=event,
            message=message,
            stepId=step_id,
            metadata={k: str(v) for k, v in metadata.items() if v is not None},
        )
        entry = self._chain(entry)
        for listener in self._listeners:
            listener(entry)
        return entry

    def on_log(self, listener: Callable[[LogEntry], None]) -> None:
        """Call `listener` with every entry logged from now on (merged chunk entries excepted)."""
        self._listeners.append(listener)

    def merge(
        self,
        steps: Iterable[StepState],
        logs: Iterable[LogEntry],
        artifacts: Iterable[ArtifactRecord],
        succeeded: Iterable[str] = (),
        succeeded_at: str | None = None,
    ) -> None:
        """Take in what a map chunk (a child workflow) did: its steps' states, logs and artifacts,
        and the steps it only names as `succeeded` at their first attempt (at `succeeded_at`).

        Log entries are renumbered into this run's sequence so it stays gap-free.
        """
        steps = list(steps)
        succeeded = list(succeeded)
        for step_id in [*(s.stepId for s in steps), *succeeded]:
            self._register_held(step_id)
        self._register_iterations_of(s.stepId for s in steps)
        self._register_iterations_of(succeeded)
        for state in steps:
            if state.stepId in self.steps:
                self.steps[state.stepId] = state
        for step_id in succeeded:
            known = self.steps.get(step_id)
            if known is not None:
                known.status = "Succeeded"
                known.attempts = 1
                known.lastTransitionAt = succeeded_at
                known.statusReason = None
                known.nextAttemptAt = None
        for entry in logs:
            sequence = self.paged_through + len(self.logs) + 1
            self._chain(entry.model_copy(update={"sequence": sequence}))
        self.artifacts.extend(artifacts)
        self.updated_at = self.stamp()

    def _register_iterations_of(self, step_ids: Iterable[str]) -> None:
        """Steps a chunk reports that the run never registered: iterations of a loop (or map)
        inside a map item, which only the chunk knew how many there were. Each iteration's body
        is registered as the chunk registered it, iterations in order, outer ones first, so the
        item reads as it would in a map run here."""
        prefixes: set[str] = set()
        for step_id in step_ids:
            if step_id in self.steps:
                continue
            cut = step_id.rfind("]::")
            while cut > 0:
                prefix = step_id[: cut + 3]
                if prefix in prefixes:
                    break
                prefixes.add(prefix)
                if prefix[: prefix.rindex("[")] in self.steps:
                    break  # its loop or map is known: no need to look further out
                cut = prefix.rfind("]::", 0, cut)
        if not prefixes:
            return
        bodies = {s.id: s for s in p.walk(self.plan.steps) if isinstance(s, p.MapStep | p.LoopStep)}
        for prefix in sorted(prefixes, key=_iteration_path):
            container_id = prefix[: prefix.rindex("[")]
            container = self.steps.get(container_id)
            body = bodies.get(container.templateId or container.stepId) if container else None
            if body is None:
                continue  # not under a loop or map the run knows
            inner = body.steps if isinstance(body, p.LoopStep) else (body.step,)
            if prefix + inner[0].id not in self.steps:
                self.register_tree(inner, prefix, container_id, templated=True)

    def merge_items(
        self,
        map_id: str,
        template_id: str,
        ranges: Iterable[tuple[int, int]],
        outputs: list[Any],
        start: int,
        succeeded_at: str | None,
    ) -> None:
        """A chunk's items that succeeded plainly, by index range: every step of each succeeded
        at its first attempt; the template's own step has the item's `outputs` (from `start`)."""
        held = self.held.get(map_id)
        if held is not None:
            for first, last in ranges:
                held.succeed(first, last, outputs[first - start : last + 1 - start], succeeded_at)
            return
        for first, last in ranges:
            for index in range(first, last + 1):
                root = f"{map_id}[{index}]::{template_id}"
                for step_id in self.subtree(root):
                    known = self.steps[step_id]
                    known.status = "Succeeded"
                    known.attempts = 1
                    known.lastTransitionAt = succeeded_at
                    known.statusReason = None
                    known.nextAttemptAt = None
                self.steps[root].outputs = dict(outputs[index - start] or {})

    def hold_items(self, map_id: str, template: p.PlanStep, count: int) -> None:
        """A map in levels: its `count` items are held as a status each (Pending until told),
        not registered step by step."""
        self.held[map_id] = HeldItems(map_id, template, count)

    def _register_held(self, step_id: str) -> None:
        """A held item with more to say than a status: register its steps here, as they were."""
        if step_id in self.steps:
            return
        for held in self.held.values():
            index = held.index_of(step_id)
            if index is not None and held.register(index):
                self.register_tree(
                    (held.template,), held.prefix(index), held.map_id, templated=True
                )
                return

    def skip_items(
        self,
        map_id: str,
        ranges: Iterable[tuple[int, int]],
        reason: str,
        *,
        quiet: bool = False,
        stamp: str | None = None,
    ) -> None:
        """Held items that will not run (an item before them failed): skipped, one log entry per
        range rather than per item (none if `quiet`: a chunk skipped them, and logged it)."""
        held = self.held[map_id]
        stamp = stamp or self.stamp()
        for first, last in ranges:
            if held.skip(first, last, reason, stamp, pending_only=False) and not quiet:
                self.log(
                    "step.skipped",
                    f"Steps skipped ({reason}): {map_id}[{first}..{last}]",
                    step_id=map_id,
                    items=f"{first}..{last}",
                )
        self.updated_at = stamp

    def subtree(self, root: str) -> list[str]:
        """A step's id and the ids of every step below it, the step first."""
        found, stack = [], [root]
        while stack:
            step_id = stack.pop()
            found.append(step_id)
            stack.extend(self.children.get(step_id, ()))
        return found

    # ----------------------------------------------------------------- steps

    def _add(self, state: StepState) -> None:
        if state.parentId is not None:
            self.children.setdefault(state.parentId, []).append(state.stepId)
        elif state.stepId not in self.steps:
            self.roots.append(state.stepId)
        self.steps[state.stepId] = state

    def register_tree(
        self,
        steps: Iterable[p.PlanStep],
        prefix: str,
        parent_id: str | None,
        *,
        templated: bool,
    ) -> None:
        """Register a subtree. Map and loop bodies are registered per iteration, when they start."""
        for state in step_states(steps, prefix, parent_id, templated=templated):
            self._add(state)

    def step(self, runtime_id: str) -> StepState:
        return self.steps[runtime_id]

    def transition(
        self,
        runtime_id: str,
        status: StepStatus,
        *,
        reason: str | None = None,
        message: str | None = None,
        quiet: bool = False,
        **metadata: Any,
    ) -> None:
        """Move a step to a status, stamp it, and log the move (unless `quiet`)."""
        state = self.steps[runtime_id]
        stamp = self.stamp()
        state.status = status
        state.statusReason = reason
        state.lastTransitionAt = stamp
        if status != "Pending":
            state.nextAttemptAt = None
        if status == "Skipped" and reason == "condition-false":
            state.enabled = False
        self.updated_at = stamp
        if quiet or status not in _EVENT_FOR_STATUS:
            return
        event, level, text = _EVENT_FOR_STATUS[status]
        if status == "Skipped" and reason:
            text = f"{text} ({reason})"
        self.log(
            event,
            message or f"{text}: {runtime_id}",
            level=level,
            step_id=runtime_id,
            reason=reason if status != "Skipped" else None,
            **metadata,
        )

    def begin_attempt(self, runtime_id: str, attempt: int) -> None:
        """A run step starts its `attempt`-th try (logged, with the number after the first)."""
        self.steps[runtime_id].attempts = attempt
        self.transition(runtime_id, "Running", attempt=attempt if attempt > 1 else None)

    def count_attempt(self, runtime_id: str, attempt: int) -> None:
        """A step already running tries again (a policy gate's next evaluation)."""
        self.steps[runtime_id].attempts = attempt

    def reuse(
        self, runtime_id: str, outputs: dict[str, Any], attempts: int, redrive_of: str
    ) -> None:
        """A redrive: the step succeeded in the run redriven, and its outputs carry over."""
        state = self.steps[runtime_id]
        state.outputs = dict(outputs)
        state.attempts = attempts
        self.transition(runtime_id, "Succeeded", reason="reused", redriveOf=redrive_of)

    def record_outputs(self, runtime_id: str, outputs: dict[str, Any]) -> None:
        """What a step produced so far, before it has its final status."""
        self.steps[runtime_id].outputs = outputs

    def complete_attempt(
        self,
        runtime_id: str,
        outputs: dict[str, Any],
        artifacts: Iterable[ArtifactRecord],
        **meta: Any,
    ) -> None:
        """A run step's attempt succeeded: its outputs, the files it stored, Succeeded."""
        self.steps[runtime_id].outputs = outputs
        self.artifacts.extend(artifacts)
        self.transition(runtime_id, "Succeeded", **meta)

    def schedule_retry(
        self, runtime_id: str, attempt: int, max_attempts: int, backoff: int, message: str
    ) -> None:
        """An attempt failed and another follows after `backoff` seconds: Pending till then."""
        self.transition(runtime_id, "Pending", reason="retry-scheduled", quiet=True)
        next_at = rfc3339(self._now() + timedelta(seconds=backoff))
        self.steps[runtime_id].nextAttemptAt = next_at
        self.log(
            "step.retrying",
            f"Step failed, retrying in {backoff}s: {runtime_id} "
            f"(attempt {attempt} of {max_attempts}): {message}",
            level="warn",
            step_id=runtime_id,
            nextAttemptAt=next_at,
        )

    def resume_attempts(self, runtime_id: str) -> None:
        """After a retry's wait, the step runs again (quietly: the wait was logged)."""
        self.transition(runtime_id, "Running", quiet=True)

    def finish_step(
        self, runtime_id: str, ok: bool, outputs: dict[str, Any], reason: str | None = None
    ) -> bool:
        """A step that holds others (or a gate) ends with its outputs: Succeeded or Failed."""
        self.steps[runtime_id].outputs = outputs
        self.progress.pop(runtime_id, None)
        if ok:
            self.transition(runtime_id, "Succeeded", reason=reason)
        else:
            self.transition(runtime_id, "Failed", reason=reason or "child-failed")
        return ok

    def fail_step(self, runtime_id: str, reason: str, message: str) -> None:
        """A step fails for good; whatever below it has not finished is skipped."""
        self.progress.pop(runtime_id, None)
        self.transition(runtime_id, "Failed", reason=reason, message=message)
        self.skip_subtree(runtime_id, reason)

    def skip(self, runtime_id: str, reason: str) -> None:
        """A step that will not run (or not run on), with everything below it."""
        if self.steps[runtime_id].status in ("Pending", "Running"):
            self.transition(runtime_id, "Skipped", reason=reason)
        self.skip_subtree(runtime_id, reason)

    def skip_subtree(self, runtime_id: str, reason: str) -> None:
        """Skip every still-open step below a step (the step itself is handled by the caller)."""
        self._skip_held(runtime_id, reason)
        stack = list(self.children.get(runtime_id, ()))
        while stack:
            child = stack.pop()
            if self.steps[child].status not in TERMINAL_STEP:
                self.transition(child, "Skipped", reason=reason, quiet=True)
            self._skip_held(child, reason)
            stack.extend(self.children.get(child, ()))

    def _skip_held(self, runtime_id: str, reason: str) -> None:
        """A map in levels whose pending items will not run now: skipped, quietly."""
        held = self.held.get(runtime_id)
        if held is not None:
            held.skip(0, held.count - 1, reason, self.stamp(), pending_only=True)

    def close_open_steps(self, reason: str, *, loud: bool = False) -> None:
        """At the end of a run: steps never started are Skipped; ones cut off mid-way are Failed.

        `loud`: a step that had begun (running, waiting at a gate, waiting to retry) gets its own
        `step.failed` / `step.skipped` entry with the reason; steps never reached stay quiet so a
        cancelled map of thousands does not log thousands of lines.
        """
        for held in self.held.values():
            held.skip(0, held.count - 1, reason, self.stamp(), pending_only=True)
        for state in self.steps.values():
            begun = state.lastTransitionAt is not None
            if state.status == "Pending":
                self.transition(state.stepId, "Skipped", reason=reason, quiet=not (loud and begun))
            elif state.status == "Running":
                self.transition(state.stepId, "Failed", reason=reason, quiet=not loud)

    def cancel_open_approvals(self, reason: str) -> None:
        """A run that ended without them: its open approvals can no longer be decided."""
        for approval in self.approvals.values():
            if approval.status == "pending":
                approval.status = "cancelled"
                approval.missing = []
                self.log(
                    "gate.cancelled",
                    f"Approval cancelled: {approval.approvalId} ({reason})",
                    level="warn",
                    step_id=approval.stepId,
                    approvalId=approval.approvalId,
                    reason=reason,
                )
            elif approval.status == "waiting":
                approval.status = "cancelled"
                approval.missing = []

    # ----------------------------------------------------------------- where steps stand

    def begin_loop(self, runtime_id: str, iterations: int) -> StepProgress:
        """A loop starts its iterations; its progress (carried) from here on."""
        return self.progress.setdefault(runtime_id, StepProgress(iterations=iterations))

    def _unbegun(self) -> Iterator[tuple[str, p.LoopStep, int]]:
        """(loop id, loop, iteration) for each iteration of a loop under way not begun yet:
        Pending from the plan, so neither carried nor paged, only registered again."""
        if not any(progress.iterations for progress in self.progress.values()):
            return
        loops = {s.id: s for s in p.walk(self.plan.steps) if isinstance(s, p.LoopStep)}
        for loop_id, progress in list(self.progress.items()):
            state = self.steps.get(loop_id)
            loop = loops.get(state.templateId or state.stepId) if state is not None else None
            if loop is None:
                continue
            for index in range(progress.nextIteration + 1, progress.iterations):
                yield loop_id, loop, index

    def _register_unbegun(self) -> None:
        for loop_id, loop, index in self._unbegun():
            self.register_tree(loop.steps, f"{loop_id}[{index}]::", loop_id, templated=True)

    def iteration_done(
        self, runtime_id: str, index: int, output: dict[str, Any], passed: bool, aggregation: str
    ) -> None:
        """A loop's iteration `index` ended; keep of its output what the aggregation needs."""
        progress = self.progress[runtime_id]
        progress.nextIteration = index + 1
        progress.ok = progress.ok and passed
        if aggregation == "collect":
            progress.outputs.append(output)
        elif aggregation == "merge":
            if not progress.outputs:
                progress.outputs.append({})
            progress.outputs[0].update(output)
        elif aggregation == "first":
            if not progress.outputs:
                progress.outputs.append(output)
        elif aggregation == "last":
            progress.outputs[:] = [output]

    def take_branch(self, runtime_id: str, branch: int | None) -> None:
        """A conditional chose its branch (None: `else`); carried, never evaluated again."""
        self.progress[runtime_id] = StepProgress(branch=branch)

    def finished(self, runtime_id: str) -> StepState | None:
        """Walking the plan again after continuing as new inside a step: the step's state if it
        had already finished (it is not run again), else None."""
        if not self.resuming:
            return None
        state = self.steps.get(runtime_id)
        return state if state is not None and state.status in TERMINAL_STEP else None

    # ----------------------------------------------------------------- what expressions see

    def record_result(self, prefix: str, step_id: str) -> None:
        """A step reached its final status: later expressions in its iteration (or, at the top,
        anywhere in the run) see it as `steps.<id>`."""
        state = self.steps[prefix + step_id]
        self._scopes.setdefault(prefix, {})[step_id] = {
            "status": state.status,
            "outputs": state.outputs,
        }

    def results(self, prefix: str = "") -> Mapping[str, StepResult]:
        """The finished steps of one iteration (`prefix`), or of the run itself."""
        return self._scopes.get(prefix, {})

    def forget_results(self, prefixes: Iterable[str]) -> None:
        """Iterations that ended: nothing reads their steps' results any more."""
        for prefix in prefixes:
            if prefix:
                self._scopes.pop(prefix, None)

    # ----------------------------------------------------------------- approvals

    def check_decision(
        self, decision: ApprovalSignal, now: datetime | None = None, *, strict: bool = True
    ) -> tuple[Refusal, str] | None:
        """Why a decision cannot be applied, as (refusal code, message); None when it can.

        `now`: when the workflow handles it; at or past the approval's `expiresAt` it is refused
        whatever order the timer and the decision reached the worker in. `strict` off keeps the
        rules that running histories were recorded under (see PackRun's patch).
        """
        if decision.planHash != self.plan_hash:
            return (
                Refusal.PLAN_HASH_MISMATCH,
                f"planHash {decision.planHash} does not match the run's plan {self.plan_hash}",
            )
        approval = self.approvals.get(decision.approvalId)
        if approval is None:
            return (Refusal.APPROVAL_NOT_FOUND, f"run has no approval {decision.approvalId!r}")
        if decision.tokenId is not None and any(
            d.tokenId == decision.tokenId for d in approval.decisions
        ):
            return (
                Refusal.TOKEN_ALREADY_USED,
                f"this approval link was already used on {approval.approvalId!r}",
            )
        if approval.status in DECIDED or approval.status == "cancelled":
            return (
                Refusal.APPROVAL_ALREADY_DECIDED,
                f"approval {approval.approvalId!r} is already {approval.status}",
            )
        if approval.status != "pending":
            return (
                Refusal.APPROVAL_NOT_PENDING,
                f"approval {approval.approvalId!r} is not awaiting a decision yet",
            )
        actor = decision.actorId or ANONYMOUS
        if strict:
            if (
                approval.expiresAt is not None
                and now is not None
                and rfc3339(now) >= approval.expiresAt
            ):
                return (
                    Refusal.APPROVAL_EXPIRED,
                    f"approval {approval.approvalId!r} expired at {approval.expiresAt}; "
                    "the deadline's outcome stands",
                )
            if decision.decision == "expired":
                return (
                    Refusal.EXPIRED_BY_PERSON,
                    "`expired` is the deadline's outcome, not a decision anyone can send: "
                    "approve or reject",
                )
            spec = self.plan.approval(approval.approvalId)
            requester = self.meta.actor
            if (
                spec is not None
                and not spec.allowRequester
                and requester not in (None, ANONYMOUS)
                and actor == requester
            ):
                return (
                    Refusal.REQUESTER_NOT_ALLOWED,
                    f"{actor} requested this run, and approval {approval.approvalId!r} may not be "
                    "decided by the run's requester (allowRequester: false)",
                )
        if any(d.actorId == actor for d in approval.decisions):
            return (
                Refusal.DUPLICATE_APPROVER,
                f"{actor} has already decided on {approval.approvalId!r}",
            )
        if strict and decision.decision == "approved":
            spec = self.plan.approval(approval.approvalId)
            if spec is not None and spec.quorum:
                before = self.seats(approval)
                voters = [*self._voters(approval), Voter(actor, frozenset(decision.grants))]
                if count_seats(spec, voters).filled <= before.filled:
                    return (
                        Refusal.NO_OPEN_SEAT,
                        f"approval {approval.approvalId!r} still needs "
                        f"{', '.join(before.describe_missing())}; {actor} holds none of the "
                        "grants of its open seats",
                    )
        return None

    def _voters(self, approval: ApprovalState) -> list[Voter]:
        return [
            Voter(d.actorId, frozenset(d.grants))
            for d in approval.decisions
            if d.decision == "approved"
        ]

    def seats(self, approval: ApprovalState) -> Seats:
        spec = self.plan.approval(approval.approvalId)
        if spec is None:  # carried from a plan that no longer names it: count as before
            spec = p.ApprovalSpec(
                id=approval.approvalId, requiredApprovals=approval.requiredApprovals
            )
        return count_seats(spec, self._voters(approval))

    def refuse(
        self, decision: ApprovalSignal, code: Refusal, message: str, via: Via | None
    ) -> ApprovalOutcome:
        """Log a refused decision (who, why, how it came; the entry's time says when)."""
        self.log(
            "gate.decision-refused",
            f"Decision refused: {message}",
            level="warn",
            step_id=(a.stepId if (a := self.approvals.get(decision.approvalId)) else None),
            approvalId=decision.approvalId,
            actorId=decision.actorId or ANONYMOUS,
            decision=decision.decision,
            via=via,
            error=code.value,
            reason=message,
            statedActorId=decision.statedActorId,
        )
        return ApprovalOutcome(
            status=decision.decision, resumed=False, refused=code, reason=message
        )

    def apply_decision(self, decision: ApprovalSignal, via: Via | None = None) -> ApprovalOutcome:
        """Record a decision (already checked) and settle the approval when it is final."""
        approval = self.approvals[decision.approvalId]
        actor = decision.actorId or ANONYMOUS
        record = ApprovalDecisionRecord(
            actorId=actor,
            decision=decision.decision,
            summary=decision.summary,
            decidedAt=self.stamp(),
            tokenId=decision.tokenId,
            via=via,
            grants=list(decision.grants),
            statedActorId=decision.statedActorId,
        )
        approval.decisions.append(record)
        seats = self.seats(approval)
        for counted in approval.decisions:
            # The matching may move an earlier voter to another seat to make room: show where
            # each one sits now.
            if counted.decision == "approved":
                counted.seat = seats.seat_of.get(counted.actorId)
        approval.missing = seats.describe_missing()
        meta: dict[str, Any] = {
            "approvalId": approval.approvalId,
            "actorId": actor,
            "summary": decision.summary,
            "via": via,
            "seat": record.seat,
            "tokenId": decision.tokenId,
            "statedActorId": decision.statedActorId,
        }
        if decision.decision == "approved" and not seats.complete:
            self.log(
                "gate.vote",
                f"Approval {seats.filled} of {seats.required} "
                f"for {approval.approvalId} by {actor}"
                + (f"; still needs {', '.join(approval.missing)}" if approval.missing else ""),
                step_id=approval.stepId,
                missing="; ".join(approval.missing) or None,
                **meta,
            )
        else:
            self.settle(approval, decision.decision, **meta)
        return ApprovalOutcome(
            status=decision.decision,
            resumed=approval.status == "approved",
            approvals=seats.filled,
            requiredApprovals=seats.required,
            missing=approval.missing,
        )

    def settle(self, approval: ApprovalState, status: Decision, **meta: Any) -> None:
        approval.status = status
        approval.missing = []
        verb = {"approved": "Approved", "rejected": "Rejected", "expired": "Expired"}[status]
        level: LogLevel = "info" if status == "approved" else "warn"
        self.log(
            f"gate.{status}",
            f"{verb}: {approval.approvalId}",
            level=level,
            step_id=approval.stepId,
            **meta,
        )

    def open_gate(
        self, runtime_id: str, approval_id: str, message: str | None
    ) -> tuple[ApprovalState, timedelta | None]:
        """A gate asks for its approval: the approval is pending, the step waits, operators are
        told. Returns the approval and how long it may take (None: no expiry)."""
        approval = self.approvals[approval_id]
        spec = self.plan.approval(approval_id)
        assert spec is not None  # the compiler checked that every gate names a declared approval
        now = self._now()
        approval.status = "pending"
        approval.stepId = runtime_id
        approval.requestedAt = rfc3339(now)
        approval.message = message or spec.message
        approval.missing = self.seats(approval).describe_missing()
        timeout = None
        if spec.expiresAfterSeconds:
            timeout = timedelta(seconds=spec.expiresAfterSeconds)
            approval.expiresAt = rfc3339(now + timeout)
        self.transition(runtime_id, "Pending", reason="awaiting-approval", quiet=True)
        self.log(
            "gate.awaiting",
            f"Awaiting approval: {approval_id}",
            level="warn",
            step_id=runtime_id,
            approvalId=approval_id,
            requiredApprovals=spec.requiredApprovals,
            grants=",".join(spec.grants) or None,
            expiresAt=approval.expiresAt,
            gateMessage=approval.message,
        )
        self.open_gates[runtime_id] = approval_id
        return approval, timeout

    def expire(self, approval_id: str) -> None:
        """An approval's time ran out before enough people decided."""
        approval = self.approvals[approval_id]
        self.settle(approval, "expired", approvalId=approval_id, actorId=TIMER)

    def close_gate(self, runtime_id: str) -> None:
        """The step no longer waits (decided, expired, or the run is being cancelled)."""
        self.open_gates.pop(runtime_id, None)

    # ----------------------------------------------------------------- run status

    def _set_status(self, status: RunStatus) -> bool:
        """Set the run status; returns whether it changed."""
        if self.status == status:
            return False
        self.status = status
        self.updated_at = self.stamp()
        return True

    def start(self) -> None:
        """A new run: its steps as the plan has them, then running."""
        self.register_tree(self.plan.steps, "", None, templated=False)
        self.log(
            "run.created",
            "Run created.",
            planHash=self.plan_hash,
            requestedAt=self.meta.requestedAt,
            actor=self.meta.actor,
            pack=f"{self.plan.pack.name}@{self.plan.pack.version}",
        )
        self._set_status("running")
        self.log("run.started", "Run started.")

    def start_chunk(self, template: p.PlanStep, map_id: str, start: int, count: int) -> None:
        """A map chunk: the iterations it runs, registered under their map."""
        self._set_status("running")
        for index in range(start, start + count):
            self.register_tree((template,), f"{map_id}[{index}]::", map_id, templated=True)

    def continued(self, history_from: str) -> None:
        """A run that continued as new picks up in a fresh history."""
        self.log("run.continued", "Run continued as new.", historyFrom=history_from)

    def advance(self) -> None:
        """The top-level step at `next_step_index` is done (carried across continue-as-new)."""
        self.next_step_index += 1

    def settle_waiting(self) -> bool:
        """Running or awaiting-approval, as the open gates say; returns whether that changed."""
        if self.status in TERMINAL_RUN_STATUSES or self.status == "pending":
            return False
        return self._set_status("awaiting-approval" if self.open_gates else "running")

    def warn_logs_kept(self, why: str) -> None:
        """Log entries could not be paged out; said once, they stay in the workflow meanwhile."""
        if self._paging_warned:
            return
        self._paging_warned = True
        self.log(
            "run.logs-kept",
            f"Log entries could not be paged out to the artifact store: {why}",
            level="warn",
        )

    def warn_too_large_to_carry(self, history_length: int | None = None) -> None:
        """The state is too big to continue as new with (at `history_length` events); said once,
        the run goes on here."""
        self.carry_refused_at = history_length
        if self._carry_warned:
            return
        self._carry_warned = True
        self.log(
            "run.continue-as-new-skipped",
            "Run state too large to continue as new; continuing in this history.",
            level="warn",
        )

    def request_cancel(
        self,
        actor: str | None = None,
        reason: str | None = None,
        *,
        through_temporal: bool = False,
        temporal_follows: bool = False,
    ) -> bool:
        """Cancellation asked for; returns False when it already was or the run has ended."""
        if self.cancel_requested or self.status in TERMINAL_RUN_STATUSES:
            return False
        self.cancel_requested = True
        self.temporal_cancel_follows = temporal_follows
        if through_temporal:
            self.cancelled_through_temporal = True
            self.log(
                "run.cancel-requested", "Cancellation requested through Temporal.", level="warn"
            )
        else:
            self.log(
                "run.cancel-requested",
                "Cancellation requested.",
                level="warn",
                actor=actor,
                reason=reason,
            )
        return True

    def set_output(self, name: str, value: Any) -> None:
        """One of the pack's object outputs, evaluated at the end of the run."""
        self.outputs[name] = value

    def add_artifacts(self, records: Iterable[ArtifactRecord]) -> None:
        self.artifacts.extend(records)

    def capture(self, records: Iterable[ArtifactRecord]) -> None:
        """The pack's file outputs, captured (or not) at the end of the run, each logged."""
        for record in records:
            self.artifacts.append(record)
            captured = record.status == "captured"
            self.log(
                "artifact." + ("captured" if captured else "failed"),
                f"Artifact {record.status}: {record.name}",
                level="info" if captured else "warn",
                storedPath=record.storedPath,
                notes=record.notes,
            )

    def end(self, ok: bool, *, loud: bool) -> None:
        """The run ran its course: steps not reached are closed, then succeeded or failed.

        `loud` (PackRun's patch): a failed run logs the steps it cut off and cancels its open
        approvals.
        """
        self.close_open_steps("run-failed" if not ok else "not-reached", loud=loud and not ok)
        if loud and not ok:
            self.cancel_open_approvals("run-failed")
        if ok:
            self._set_status("succeeded")
            self.log("run.completed", "Run completed.")
            return
        failed = next((s for s in self.steps.values() if s.status == "Failed"), None)
        self.error = f"step {failed.stepId} failed ({failed.statusReason})" if failed else "failed"
        self._set_status("failed")
        self.log("run.failed", f"Run failed: {self.error}.", level="error")

    def end_cancelled(self, *, loud: bool) -> None:
        """The run was cancelled; `loud` as for `end`."""
        self.close_open_steps("cancelled", loud=loud)
        if loud:
            self.cancel_open_approvals("run-cancelled")
        self._set_status("cancelled")
        self.log("run.cancelled", "Run cancelled.", level="warn")

    # ----------------------------------------------------------------- read side

    def snapshot(self, query: StateQuery | None = None) -> RunStateSnapshot:
        """The run's state; with a query, one page of steps, outputs only when asked for.

        A page walks the step tree only as far as its end: a query of a run with 100,000 steps
        costs the page asked for, not a copy of every step."""
        total = len(self.steps) + self.paged_steps
        total += sum(held.hidden_steps for held in self.held.values())
        paged: list[PagedSteps] = []
        if query is None:
            query = StateQuery(includeOutputs=True, stepsLimit=None)
        if self.step_segments:
            end = None if query.stepsLimit is None else query.stepsOffset + query.stepsLimit
            steps, paged = self._page(query.stepsOffset, end, query.includeOutputs)
        else:
            walk = self._walk(query.stepsOffset)
            steps = list(itertools.islice(walk, query.stepsLimit))
        if not query.includeOutputs:
            steps = [s.model_copy(update={"outputs": {}}) for s in steps]
        return RunStateSnapshot(
            runId=self.meta.runId,
            tenant=self.meta.tenant,
            pack=self.plan.pack.name,
            packVersion=self.plan.pack.version,
            planHash=self.plan_hash,
            status=self.status,
            failurePolicy=self.plan.failure,
            createdAt=self.created_at,
            updatedAt=self.updated_at,
            steps=steps,
            totalSteps=total,
            approvals=list(self.approvals.values()),
            outputs=self.outputs,
            error=self.error,
            redriveOf=self.meta.redrive.of if self.meta.redrive else None,
            packDigest=self.meta.packDigest,
            logChainHead=self.log_chain_head,
            logEntries=self.paged_through + len(self.logs),
            pagedSteps=paged,
        )

    def _page(
        self, offset: int, end: int | None, with_outputs: bool
    ) -> tuple[list[StepState], list[PagedSteps]]:
        """Steps `offset..end` in tree order: those the run holds, and where the paged-out ones
        go. Walks only as far as the page's end."""
        steps: list[StepState] = []
        paged: list[PagedSteps] = []
        position = 0
        for item in self._walk_paged():
            if end is not None and position >= end:
                break
            if isinstance(item, StepSegment):
                low = max(offset, position)
                high = item.count + position if end is None else min(end, item.count + position)
                if low < high:
                    paged.append(
                        PagedSteps(
                            at=len(steps),
                            storedPath=item.storedPath,
                            skip=low - position,
                            take=high - low,
                            withOutputs=with_outputs,
                        )
                    )
                position += item.count
                continue
            if position >= offset:
                steps.append(item)
            position += 1
        return steps, paged

    def ordered_steps(self) -> list[StepState]:
        """The steps the run holds in tree order: each followed by everything below it."""
        return list(self._walk())

    def _walk(self, skip: int = 0) -> Iterator[StepState]:
        """Steps in tree order from the `skip`-th on. A held map's items that are not
        registered are passed over without making their states, a whole item at a time."""
        if not self.held:
            return itertools.islice(self._walk_registered(self.roots), skip, None)
        return self._walk_from(self.roots, [skip])

    def _walk_registered(self, roots: Iterable[str]) -> Iterator[StepState]:
        stack = list(reversed(list(roots)))
        while stack:
            step_id = stack.pop()
            yield self.steps[step_id]
            stack.extend(reversed(self.children.get(step_id, ())))

    def _walk_paged(self, roots: Iterable[str] | None = None) -> Iterator[StepState | StepSegment]:
        """Tree order; a loop's paged-out iterations (segments) come before those it holds."""
        segments: dict[str, list[StepSegment]] = {}
        for segment in self.step_segments:
            segments.setdefault(segment.loopId, []).append(segment)

        def walk(ids: Iterable[str]) -> Iterator[StepState | StepSegment]:
            for step_id in ids:
                yield self.steps[step_id]
                yield from segments.get(step_id, ())
                held = self.held.get(step_id)
                if held is None:
                    yield from walk(self.children.get(step_id, ()))
                else:
                    yield from held.walk([0], lambda root: walk([root]))

        return walk(self.roots if roots is None else roots)

    def _walk_from(self, roots: Iterable[str], skip: list[int]) -> Iterator[StepState]:
        for step_id in roots:
            if skip[0]:
                skip[0] -= 1
            else:
                yield self.steps[step_id]
            held = self.held.get(step_id)
            if held is None:
                yield from self._walk_from(self.children.get(step_id, ()), skip)
            else:
                yield from held.walk(skip, lambda root: self._walk_from([root], skip))

    # ----------------------------------------------------------------- paging steps out

    def iterations_to_page(self) -> list[IterationPage]:
        """The finished iterations the run still holds of each loop (all of a loop that ended;
        those before the one under way of a loop running), outermost loops first: an inner
        loop inside them goes out with them."""
        pages: list[IterationPage] = []
        stack = list(reversed(self.roots))
        while stack:
            step_id = stack.pop()
            state = self.steps[step_id]
            children = self.children.get(step_id, [])
            if state.kind == "Loop" and children:
                page = self._finished_iterations(state, children)
                if page is not None:
                    pages.append(page)
                    children = children[len(page.roots) :]
            stack.extend(reversed(children))
        return pages

    def _finished_iterations(self, loop: StepState, children: list[str]) -> IterationPage | None:
        if loop.status in TERMINAL_STEP:
            limit = None
        elif loop.stepId in self.progress:
            limit = self.progress[loop.stepId].nextIteration
        else:
            return None
        roots: list[str] = []
        indexes: list[int] = []
        for child in children:
            index = _iteration(loop.stepId, child)
            if limit is not None and index >= limit:
                break
            roots.append(child)
            indexes.append(index)
        if not roots:
            return None
        entries: list[dict[str, Any]] = []
        count = 0
        for item in self._walk_paged(roots):
            if isinstance(item, StepSegment):
                entries.append({"segment": item.storedPath})
                count += item.count
            else:
                entries.append(item.model_dump(mode="json"))
                count += 1
        if count < PAGE_MIN_STEPS:
            return None
        return IterationPage(loop.stepId, indexes[0], indexes[-1], tuple(roots), entries)

    def paged_out_steps(self, page: IterationPage, segment: StepSegment) -> None:
        """A page of iterations is in the artifact store now (`segment`): drop their states
        here, and the segments of inner loops the page took in."""
        dropped = {e["segment"] for e in page.entries if "segment" in e}
        for item in list(self._walk_paged(page.roots)):
            if isinstance(item, StepState):
                self.steps.pop(item.stepId, None)
                self.children.pop(item.stepId, None)
                self.held.pop(item.stepId, None)
        loop_children = self.children[page.loop_id]
        del loop_children[: len(page.roots)]
        kept = [s for s in self.step_segments if s.storedPath not in dropped]
        self.step_segments = [*kept, segment]
        self.paged_steps = sum(s.count for s in self.step_segments)

    def logs_page(self, after: int, limit: int, finished: bool) -> LogsPage:
        limit = max(1, min(limit, 5000))
        after = max(after, 0)
        if after < self.paged_through:
            # Older than what the workflow keeps: say where the API finds them.
            segments = [s for s in self.log_segments if s.last > after][:SEGMENTS_PER_PAGE]
            return LogsPage(entries=[], nextSequence=after, finished=False, segments=segments)
        # Sequences are gap-free, so `after` less what was paged out is the index to start at.
        start = after - self.paged_through
        entries = self.logs[start : start + limit]
        next_seq = entries[-1].sequence if entries else after
        return LogsPage(entries=entries, nextSequence=next_seq, finished=finished)

    def paged_out(self, segment: LogSegment) -> None:
        """Entries up to `segment.last` are in the artifact store now: drop them here."""
        self.log_segments.append(segment)
        last = next(e for e in self.logs if e.sequence == segment.last)
        self.logs = [e for e in self.logs if e.sequence > segment.last]
        self.paged_through = segment.last
        self.paged_head = last.hash

    def surely_too_large_to_carry(self, limit: int) -> bool:
        """Whether the carried state would be over `limit` bytes, told from a count, without
        building it: a map in levels holds 50,000 or more items, whose states would take seconds
        to build and serialise in one workflow task (the SDK's deadlock deadline is 2 s) only
        to be refused. A floor of the size, so a True here is what measuring would have said."""
        hidden = sum(held.hidden_steps for held in self.held.values())
        return hidden * MIN_CARRIED_STEP_BYTES > limit

    def carry(self) -> CarriedState:
        # Iterations of a loop under way not begun yet are registered again from the plan.
        unbegun: set[str] = set()
        for loop_id, progress in self.progress.items():
            if not progress.iterations:
                continue
            for child in self.children.get(loop_id, ()):
                if _iteration(loop_id, child) > progress.nextIteration:
                    unbegun.update(self.subtree(child))
        return CarriedState(
            status=self.status,
            createdAt=self.created_at,
            updatedAt=self.updated_at,
            nextStepIndex=self.next_step_index,
            # Held items are carried as the states they stand for (in tree order, which the next
            # history registers them in).
            steps=[
                s
                for s in (self._walk() if self.held else self.steps.values())
                if s.stepId not in unbegun
            ],
            approvals=list(self.approvals.values()),
            logs=self.logs,
            logSegments=self.log_segments,
            logsPagedThrough=self.paged_through,
            logsPagedHead=self.paged_head,
            artifacts=self.artifacts,
            cancelRequested=self.cancel_requested,
            progress=self.progress,
            stepSegments=self.step_segments,
        )


def _iteration(loop_id: str, child_id: str) -> int:
    """The iteration a loop's child belongs to: `<loopId>[<i>]::<stepId>`."""
    start = len(loop_id) + 1
    return int(child_id[start : child_id.index("]::", start)])


def _iteration_path(prefix: str) -> tuple[tuple[str, int], ...]:
    """`map[3]::loop[10]::` as ((map, 3), (loop, 10)): iteration prefixes in tree order."""
    path = []
    for segment in prefix.split("]::")[:-1]:
        name, _, index = segment.rpartition("[")
        path.append((name, int(index)))
    return tuple(path)
