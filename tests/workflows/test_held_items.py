"""A map in levels holds its items as a status each (workflows/held_items.py): what the state
query shows, page by page, is what the same run would show with every step registered."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from compiler import compile_manifest
from compiler import plan as p
from workflows.contract.state import RunMeta, StateQuery, StepState
from workflows.pack_run import CARRY_LIMIT_BYTES
from workflows.run_book import MIN_CARRIED_STEP_BYTES, RunBook

PACK = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: held, version: 1.0.0}
spec:
  steps:
    - {id: first, run: {uses: "builtin:noop"}}
    - id: fan
      map:
        items: [1, 2]
        step: {id: both, parallel: {steps: [{id: a, run: {uses: "builtin:noop"}}, {id: b, run: {uses: "builtin:echo"}}]}}
    - {id: last, run: {uses: "builtin:noop"}}
"""
COUNT = 1000
STAMP = "2026-12-05T00:00:00Z"


def book() -> tuple[RunBook, p.PlanStep]:
    compiled = compile_manifest(PACK)
    meta = RunMeta(runId="r", tenant="t", requestedAt=STAMP)
    run = RunBook(
        compiled.plan, compiled.plan_hash, meta, lambda: datetime(2026, 12, 5, tzinfo=UTC)
    )
    run.start()
    fan = compiled.plan.steps[1]
    assert isinstance(fan, p.MapStep)
    return run, fan.step


def failed_item(index: int) -> list[StepState]:
    """What a group hands back for an item that failed: its states that say more than
    'succeeded' (the plain step `a` comes by id)."""
    prefix = f"fan[{index}]::"
    return [
        StepState(
            stepId=prefix + "both",
            kind="Parallel",
            status="Failed",
            statusReason="child-failed",
            parentId="fan",
            templateId="both",
            maxParallel=10,
            lastTransitionAt=STAMP,
        ),
        StepState(
            stepId=prefix + "b",
            kind="Run",
            status="Failed",
            statusReason="step-failed",
            attempts=2,
            parentId=prefix + "both",
            templateId="b",
            lastTransitionAt=STAMP,
        ),
    ]


def tell(run: RunBook, held: bool, template: p.PlanStep) -> None:
    """The same story for both books: items 0..399 succeed, 400 fails, 401..699 succeed with
    outputs, 700..899 are skipped (a failure before them), 900.. never run (the run is
    cancelled)."""
    if held:
        run.hold_items("fan", template, COUNT)
    else:
        for index in range(COUNT):
            run.register_tree((template,), f"fan[{index}]::", "fan", templated=True)
    outputs = [{} for _ in range(400)]
    run.merge_items("fan", "both", [(0, 399)], outputs, 0, STAMP)
    run.merge(failed_item(400), [], [], ["fan[400]::a"], STAMP)
    with_outputs = [{"a": {}, "b": {"i": i}} for i in range(401, 700)]
    run.merge_items("fan", "both", [(401, 699)], with_outputs, 401, STAMP)
    if held:
        run.skip_items("fan", [(700, 899)], "previous-step-failed")
    else:
        for index in range(700, 900):
            run.skip(f"fan[{index}]::both", "previous-step-failed")
    run.end_cancelled(loud=True)


@pytest.mark.parametrize(
    ("offset", "limit"),
    [(0, None), (0, 7), (1, 2000), (3, 10), (1199, 5), (1200, 9), (2700, 400), (2999, 10)],
)
def test_pages_of_held_items_are_those_of_registered_ones(offset: int, limit: int | None) -> None:
    registered, template = book()
    tell(registered, False, template)
    held, _ = book()
    tell(held, True, template)
    query = StateQuery(includeOutputs=True, stepsOffset=offset, stepsLimit=limit)
    want = registered.snapshot(query)
    got = held.snapshot(query)
    assert got.totalSteps == want.totalSteps == 2 + 1 + 3 * COUNT
    assert got.steps == want.steps
    assert held.snapshot().steps == registered.snapshot().steps
    assert len(held.steps) < 20  # only the plan's steps and the failed item's are objects


def test_held_items_are_carried_as_the_states_they_stand_for() -> None:
    registered, template = book()
    tell(registered, False, template)
    held, _ = book()
    tell(held, True, template)
    carried = held.carry()
    assert carried.steps == registered.ordered_steps()
    again = RunBook(held.plan, held.plan_hash, held.meta, lambda: datetime.now(UTC), carried)
    assert again.snapshot().steps == registered.snapshot().steps


@pytest.mark.parametrize("count", [1, 7, 1000])
def test_the_floor_of_a_carried_size_never_exceeds_the_size(count: int) -> None:
    """`surely_too_large_to_carry` tells a refusal from a count of held states; it may say so
    only when measuring the built state would have said the same."""
    run, template = book()
    run.hold_items("fan", template, count)
    size = len(run.carry().model_dump_json())
    assert size >= sum(h.hidden_steps for h in run.held.values()) * MIN_CARRIED_STEP_BYTES
    assert not run.surely_too_large_to_carry(size)


def test_a_million_held_items_are_refused_without_building_their_states() -> None:
    run, template = book()
    run.hold_items("fan", template, 1_000_000)
    assert run.surely_too_large_to_carry(CARRY_LIMIT_BYTES)
