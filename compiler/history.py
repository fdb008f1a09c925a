"""How the workflow spreads a plan over Temporal histories, shared so estimates match what runs.

A map with more items than `MAP_INLINE_LIMIT` whose template holds no step that waits for people
(an approval gate, or a policy gate that may request an override) runs in child workflows of
`MAP_CHUNK_SIZE` items each, so no single history grows with the item count. A map of more chunks
than `MAP_CHILDREN_PER_WORKFLOW` fans out in levels: the run starts group workflows that each
start a contiguous range of the chunks (or of smaller groups), so no workflow starts more than
`MAP_CHILDREN_PER_WORKFLOW` children whatever the item count. Only the run's own workflow fans
out: a map inside a chunk runs inline in the chunk's history.

`estimate_history` turns a simulated run into event counts, using rough per-step costs: enough to
tell a pack that fits easily from one that would need continue-as-new or a smaller map.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar, assert_never

from compiler import plan as p

if TYPE_CHECKING:
    from compiler.simulation import SimulationStep

T = TypeVar("T")

MAP_INLINE_LIMIT = 200
MAP_CHUNK_SIZE = 500
MAP_CHILDREN_PER_WORKFLOW = 100
"""The most child workflows one workflow (the run, or a group) starts for a map: about 9 events
each, so its history stays near 1,000 events however many items. 100 x 500 = 50,000 items fan
out in one level; more go through groups (a million items: 20 groups of 100 chunks)."""
MAP_RESULTS_LIMIT_BYTES = 2 * 1024 * 1024
"""What a map that fans out in levels may hand back to the run, all groups together: its items'
outputs (`{}` costs nothing) and the states of items that did not plainly succeed. The run's
history holds it once, so it is bounded; past it the map fails with `map-results-too-large`."""
MAP_RESULTS_FLOOR_BYTES = 16 * 1024
"""The least a group may hand back however small its share (a few failed items' states)."""
HISTORY_EVENT_LIMIT = 50_000

# Rough event costs. A workflow task is 3 events (scheduled, started, completed).
WORKFLOW_EVENTS = 5  # started, a first workflow task, completed
RUN_ATTEMPT_EVENTS = 6  # activity scheduled, started, completed + a workflow task
RETRY_TIMER_EVENTS = 5  # timer started, fired + a workflow task
APPROVAL_GATE_EVENTS = 5  # signal (or update), a workflow task, a search-attribute upsert
EXTRA_APPROVAL_EVENTS = 4  # each further approval a gate needs: signal + a workflow task
APPROVAL_EXPIRY_EVENTS = 2  # the expiry timer, started then fired or cancelled
POLICY_ATTEMPT_EVENTS = 6  # the policy activity + a workflow task
CHILD_WORKFLOW_EVENTS = 9
"""Per child workflow (chunk or group) in the history that starts it: start initiated, started,
completed, the workflow task that follows, a share of the pacing timers. Measured: a group of 100
chunks' history holds 905 events (bench.map_scale)."""


def waits_for_people(step: p.PlanStep) -> bool:
    """Whether a step or anything inside it may wait for an approval decision."""
    return any(p.may_wait_for_approval(s) for s in p.walk([step]))


def map_runs_in_chunks(step: p.MapStep, item_count: int) -> bool:
    """Whether a map with this many items fans out to child workflows rather than running inline.

    The workflow decides with this very function (workflows/interpreter.py), so the estimate
    and the run cannot drift apart.
    """
    return item_count > MAP_INLINE_LIMIT and not waits_for_people(step.step)


def map_chunks(items: Sequence[T]) -> list[Sequence[T]]:
    """A fanned-out map's items, `MAP_CHUNK_SIZE` to a child workflow, in order."""
    return [items[i : i + MAP_CHUNK_SIZE] for i in range(0, len(items), MAP_CHUNK_SIZE)]


def map_chunk_count(item_count: int) -> int:
    """How many chunk workflows a fanned-out map of `item_count` items runs."""
    return math.ceil(item_count / MAP_CHUNK_SIZE)


def map_span(chunk_count: int) -> int:
    """How many chunks each child of a workflow covering `chunk_count` chunks takes on: 1 (the
    children are the chunks) while they fit `MAP_CHILDREN_PER_WORKFLOW`, else the smallest power
    of it that makes them fit (the children are groups of that many chunks)."""
    span = 1
    while math.ceil(chunk_count / span) > MAP_CHILDREN_PER_WORKFLOW:
        span *= max(2, MAP_CHILDREN_PER_WORKFLOW)
    return span


def map_children(first_chunk: int, chunk_count: int) -> list[tuple[int, int]]:
    """The children of a workflow covering chunks `first_chunk ..` (`chunk_count` of them), as
    (first chunk, chunks): each one chunk, or a group of `map_span` chunks (the last may be short).
    The run and every group decide with this one function, as does `estimate_history`."""
    span = map_span(chunk_count)
    return [
        (first_chunk + offset, min(span, chunk_count - offset))
        for offset in range(0, chunk_count, span)
    ]


def map_result_bytes(group_items: int, map_items: int) -> int:
    """A group's share of `MAP_RESULTS_LIMIT_BYTES`, by its items (never below the floor)."""
    share = MAP_RESULTS_LIMIT_BYTES * group_items // max(1, map_items)
    return max(MAP_RESULTS_FLOOR_BYTES, share)


def chunks_at_once(max_parallel: int) -> int:
    """How many chunk workflows of one map run at a time: enough to honour `maxParallel`."""
    return max(1, math.ceil(max_parallel / MAP_CHUNK_SIZE))


@dataclass(frozen=True)
class HistoryEstimate:
    """Estimated Temporal history events of one run.

    `largest` is the biggest single workflow history (the run's own, or one map chunk's);
    `total` counts every workflow the run starts; `workflows` is how many that is.
    """

    largest: int
    total: int
    workflows: int
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Cost:
    own: int = 0  # events in the history the steps run in
    largest_child: int = 0  # the biggest history of a child workflow started below
    total: int = 0  # events in every history, own included
    workflows: int = 0  # child workflows started below

    def times(self, n: int) -> _Cost:
        """The cost of running these steps `n` times over in the same history."""
        return _Cost(self.own * n, self.largest_child, self.total * n, self.workflows * n)

    def __add__(self, other: _Cost) -> _Cost:
        return _Cost(
            self.own + other.own,
            max(self.largest_child, other.largest_child),
            self.total + other.total,
            self.workflows + other.workflows,
        )


def _worst(costs: Sequence[_Cost]) -> _Cost:
    """At most one of several alternatives runs: count the worst of each measure."""
    if not costs:
        return _Cost()
    return _Cost(
        max(c.own for c in costs),
        max(c.largest_child for c in costs),
        max(c.total for c in costs),
        max(c.workflows for c in costs),
    )


def _events(n: int) -> _Cost:
    return _Cost(n, 0, n, 0)


def estimate_history(
    plan: p.Plan,
    steps: Sequence[SimulationStep],
    iterations: Mapping[str, int] | None = None,
) -> HistoryEstimate:
    """Estimate the history events of a run from its simulated steps.

    Counts the worst case: every retry used, the costliest branch taken. A map or loop whose items
    are unknown before the run counts as one iteration (the simulation lists it once). A map or
    loop whose simulated id is in `iterations` lists one iteration that stands for that many.

    `largest` ignores continue-as-new. The run continues as new when Temporal suggests it at a
    boundary between steps, top-level or inside loops and conditionals (not inside a parallel
    block, a map or a policy gate's branch, where other steps run beside or where it stands is not
    carried), so the warnings tell a history that only relies on that from one that no
    continue-as-new can save: a stretch between two such boundaries, or a map chunk, past the
    limit.
    """
    estimator = _Estimator(plan, iterations or {})
    root = _events(WORKFLOW_EVENTS)
    warnings = []
    for step in steps:
        cost = estimator.step(step, True)
        root = root + cost
        unbroken = estimator.unbroken(step)
        if WORKFLOW_EVENTS + unbroken > HISTORY_EVENT_LIMIT:
            warnings.append(
                f"{step['id']}: this step alone would put about {WORKFLOW_EVENTS + unbroken} "
                f"events in one workflow history, more than Temporal's limit of "
                f"{HISTORY_EVENT_LIMIT}, and the run continues as new only between steps (not "
                "inside a parallel block, a map or a policy gate's branch): split it, or move "
                f"its work into a map of more than {MAP_INLINE_LIMIT} items without approval "
                "gates"
            )
    if root.largest_child > HISTORY_EVENT_LIMIT:
        warnings.append(
            f"a map chunk's history would hold about {root.largest_child} events, more than "
            f"Temporal's limit of {HISTORY_EVENT_LIMIT}: make each item's work smaller"
        )
    largest = max(root.own, root.largest_child)
    if root.own > HISTORY_EVENT_LIMIT and not warnings:
        warnings.append(
            f"the run's own history would reach about {root.own} events, past Temporal's limit "
            f"of {HISTORY_EVENT_LIMIT}: it relies on continuing as new between steps"
        )
    return HistoryEstimate(largest, root.total, root.workflows + 1, warnings)


class _Estimator:
    def __init__(self, plan: p.Plan, iterations: Mapping[str, int]) -> None:
        self.plan = plan
        self.iterations = iterations
        self.by_id: Mapping[str, p.PlanStep] = {s.id: s for s in p.walk(plan.steps)}

    def sequence(self, steps: Sequence[SimulationStep], fan_out: bool) -> _Cost:
        total = _Cost()
        for step in steps:
            total = total + self.step(step, fan_out)
        return total

    def unbroken(self, sim: SimulationStep) -> int:
        """The most events a step puts in the run's history with no boundary in between where
        the run can continue as new: the boundaries between the steps inside a loop or a
        conditional are such places (PackRun continues as new there); inside anything else the
        step is one stretch."""
        if sim["status"] == "Skipped":
            return 0
        step = self.by_id[sim["templateId"]]
        if isinstance(step, p.LoopStep | p.ConditionalStep):
            return max((self.unbroken(child) for child in sim["children"]), default=0)
        return self.step(sim, True).own

    def approval(self, approval_id: str | None) -> int:
        spec = self.plan.approval(approval_id) if approval_id else None
        if spec is None:
            return APPROVAL_GATE_EVENTS
        events = APPROVAL_GATE_EVENTS + EXTRA_APPROVAL_EVENTS * (spec.requiredApprovals - 1)
        if spec.expiresAfterSeconds is not None:
            events += APPROVAL_EXPIRY_EVENTS
        return events

    def step(self, sim: SimulationStep, fan_out: bool) -> _Cost:
        """The cost of one simulated step; `fan_out`: whether large maps may use child workflows."""
        if sim["status"] == "Skipped":
            return _Cost()
        step = self.by_id[sim["templateId"]]
        children = sim["children"]
        match step:
            case p.RunStep():
                events = RUN_ATTEMPT_EVENTS * step.maxAttempts
                if step.backoffSeconds > 0:
                    events += RETRY_TIMER_EVENTS * (step.maxAttempts - 1)
                return _events(events)
            case p.ApprovalGateStep():
                return _events(self.approval(step.approvalId))
            case p.PolicyGateStep():
                # The workflow waits on a durable timer between policy attempts.
                events = POLICY_ATTEMPT_EVENTS * (step.retryCount + 1)
                events += RETRY_TIMER_EVENTS * step.retryCount
                if step.failureAction == "requestOverride":
                    events += self.approval(step.approvalId)
                return _events(events) + self.sequence(children, fan_out)
            case p.ConditionalStep():
                info = sim.get("conditionalInfo", {})
                sizes = [b.get("stepCount", 0) for b in info.get("branches", [])]
                sizes.append(info.get("elseStepCount", 0))
                groups, start = [], 0
                for size in sizes:
                    groups.append(self.sequence(children[start : start + size], fan_out))
                    start += size
                return _worst(groups)
            case p.MapStep() | p.ParallelStep() | p.LoopStep():
                return self._repeated(step, sim, fan_out)
            case _:
                assert_never(step)

    def _repeated(
        self, step: p.MapStep | p.ParallelStep | p.LoopStep, sim: SimulationStep, fan_out: bool
    ) -> _Cost:
        """Parallel, map and loop: their children, as often as they run, here or in chunks."""
        children = sim["children"]
        count = self.iterations.get(sim["id"])
        items = len(children) if count is None else count
        if isinstance(step, p.MapStep) and fan_out and map_runs_in_chunks(step, items):
            # A chunk workflow runs its items, and any map inside them, inline.
            if count is None:
                return self.chunks([self.step(child, False) for child in children])
            return self.counted_chunks(self.sequence(children, False), count)
        # Parallel, an inline map, a loop: every child runs in this history.
        cost = self.sequence(children, fan_out)
        return cost if count is None else cost.times(count)

    def counted_chunks(self, item: _Cost, count: int) -> _Cost:
        """`count` items of one cost in chunks: full chunks cost alike, so a million items are
        a few thousand sums, not a million."""
        full, rest = divmod(count, MAP_CHUNK_SIZE)
        chunks = [_events(WORKFLOW_EVENTS) + item.times(MAP_CHUNK_SIZE)] * full
        if rest:
            chunks.append(_events(WORKFLOW_EVENTS) + item.times(rest))
        return _fan_out(chunks)

    def chunks(self, items: Sequence[_Cost]) -> _Cost:
        """A map's items run in child workflows of MAP_CHUNK_SIZE items each (through groups of
        chunks when there are more than MAP_CHILDREN_PER_WORKFLOW of them)."""
        chunks = []
        for slice_ in map_chunks(items):
            chunk = _events(WORKFLOW_EVENTS)
            for item in slice_:
                chunk = chunk + item
            chunks.append(chunk)
        return _fan_out(chunks)


def _as_child(history: _Cost) -> _Cost:
    """What a child workflow with this history costs the workflow that starts it."""
    return _Cost(
        own=CHILD_WORKFLOW_EVENTS,
        largest_child=max(history.own, history.largest_child),
        total=CHILD_WORKFLOW_EVENTS + history.total,
        workflows=history.workflows + 1,
    )


def _fan_out(chunks: Sequence[_Cost]) -> _Cost:
    """The cost, to the workflow that starts them, of running these chunk histories: each its own
    child, or groups of them as `map_children` makes them (each group a history of its own)."""
    cost = _Cost()
    for first, count in map_children(0, len(chunks)):
        covered = chunks[first : first + count]
        if count == 1 and map_span(len(chunks)) == 1:
            cost = cost + _as_child(covered[0])
        else:
            cost = cost + _as_child(_events(WORKFLOW_EVENTS) + _fan_out(covered))
    return cost
