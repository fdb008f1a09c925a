"""The run's state: one object, changed only through its methods, read by the queries.

Every change of a step's status goes through `transition`, which also writes the log entry, so
state and log never disagree. Timestamps come from the clock the workflow hands in
(`workflow.now()`), which keeps this module deterministic.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from compiler import plan as p
from compiler.quorum import Seats, Voter, count_seats
from workflows.contract.activities import ArtifactRecord
from workflows.contract.initial import approval_states, step_state, step_states
from workflows.contract.log_chain import GENESIS, entry_hash
from workflows.contract.refusals import Refusal
from workflows.contract.state import (
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
    RunMeta,
    RunStateSnapshot,
    RunStatus,
    StateQuery,
    StepState,
    StepStatus,
    Via,
)

DECIDED = frozenset({"approved", "rejected", "expired"})
ANONYMOUS = "anonymous"
"""The actor of auth-off dev mode: exempt from `allowRequester`, so one person can try a pack."""
TIMER = "timer"
"""Who settles an approval when its deadline passes: never a person."""
SEGMENTS_PER_PAGE = 20
TERMINAL_STEP = frozenset({"Succeeded", "Failed", "Skipped"})

_EVENT_FOR_STATUS: dict[str, tuple[str, LogLevel, str]] = {
    "Running": ("step.started", "info", "Starting step"),
    "Succeeded": ("step.completed", "info", "Step completed"),
    "Failed": ("step.failed", "error", "Step failed"),
    "Skipped": ("step.skipped", "info", "Step skipped"),
}


def iso(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, the form every timestamp of the contract takes."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RunBook:
    """Steps, approvals, logs and artifacts of one run (or of one map chunk)."""

    def __init__(
        self,
        plan: p.Plan,
        plan_hash: str,
        meta: RunMeta,
        now: Callable[[], datetime],
        carried: CarriedState | None = None,
    ) -> None:
        self.plan = plan
        self.plan_hash = plan_hash
        self.meta = meta
        self._now = now
        stamp = iso(now())
        self.status: RunStatus = "pending"
        self.created_at = meta.requestedAt or stamp
        self.updated_at = stamp
        self.steps: dict[str, StepState] = {}
        self.children: dict[str, list[str]] = {}
        self.roots: list[str] = []
        """The top-level steps, in order: where a walk of the tree starts."""
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
        self.listeners: list[Callable[[LogEntry], None]] = []
        self.artifacts: list[ArtifactRecord] = []
        self.outputs: dict[str, Any] = {}
        self.error: str | None = None
        self.cancel_requested = False
        self.next_step_index = 0
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
        return iso(self._now())

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
        for listener in self.listeners:
            listener(entry)
        return entry

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

    # ----------------------------------------------------------------- steps

    def register(
        self,
        step: p.PlanStep,
        runtime_id: str,
        *,
        parent_id: str | None,
        template_id: str | None,
    ) -> StepState:
        state = step_state(step, runtime_id, parent_id=parent_id, template_id=template_id)
        self._add(state)
        return state

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

    def skip_subtree(self, runtime_id: str, reason: str) -> None:
        """Skip every still-open step below a step (the step itself is handled by the caller)."""
        stack = list(self.children.get(runtime_id, ()))
        while stack:
            child = stack.pop()
            if self.steps[child].status not in TERMINAL_STEP:
                self.transition(child, "Skipped", reason=reason, quiet=True)
            stack.extend(self.children.get(child, ()))

    def close_open_steps(self, reason: str, *, loud: bool = False) -> None:
        """At the end of a run: steps never started are Skipped; ones cut off mid-way are Failed.

        `loud`: a step that had begun (running, waiting at a gate, waiting to retry) gets its own
        `step.failed` / `step.skipped` entry with the reason; steps never reached stay quiet so a
        cancelled map of thousands does not log thousands of lines.
        """
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
                and iso(now) >= approval.expiresAt
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

    # ----------------------------------------------------------------- run status

    def set_status(self, status: RunStatus) -> bool:
        """Set the run status; returns whether it changed."""
        if self.status == status:
            return False
        self.status = status
        self.updated_at = self.stamp()
        return True

    # ----------------------------------------------------------------- read side

    def snapshot(self, query: StateQuery | None = None) -> RunStateSnapshot:
        """The run's state; with a query, one page of steps, outputs only when asked for.

        A page walks the step tree only as far as its end: a query of a run with 100,000 steps
        costs the page asked for, not a copy of every step."""
        total = len(self.steps)
        if query is None:
            steps = self.ordered_steps()
        else:
            end = None if query.stepsLimit is None else query.stepsOffset + query.stepsLimit
            steps = list(itertools.islice(self._walk(), query.stepsOffset, end))
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
        )

    def ordered_steps(self) -> list[StepState]:
        """Steps in tree order: each step followed by everything below it (iterations in order)."""
        return list(self._walk())

    def _walk(self) -> Iterator[StepState]:
        stack = list(reversed(self.roots))
        while stack:
            step_id = stack.pop()
            yield self.steps[step_id]
            stack.extend(reversed(self.children.get(step_id, ())))

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

    def carry(self) -> CarriedState:
        return CarriedState(
            status=self.status,
            createdAt=self.created_at,
            updatedAt=self.updated_at,
            nextStepIndex=self.next_step_index,
            steps=list(self.steps.values()),
            approvals=list(self.approvals.values()),
            logs=self.logs,
            logSegments=self.log_segments,
            logsPagedThrough=self.paged_through,
            logsPagedHead=self.paged_head,
            artifacts=self.artifacts,
            cancelRequested=self.cancel_requested,
        )
