"""A map (or parallel block) with a large maxParallel starts its work over several workflow tasks:
no single task starts more than the budget, so the deadlock detector (TMPRL1101, 2 s per task)
never trips however wide the map, and every item still runs."""

from __future__ import annotations

import asyncio
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.testing import WorkflowEnvironment

from compiler.history import MAP_CHUNK_SIZE, MAP_INLINE_LIMIT
from tests.helpers import start_pack, state_of, unique, worker_for
from workflows.pacing import CHUNK_START_COST, STARTS_PER_TASK

WIDE = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: wide, version: 1.0.0}
spec:
  inputs: [{name: many, type: array}, {name: some, type: array}]
  steps:
    - id: inline
      map: {items: "inputs.some", maxParallel: 1000, step: {id: one, run: {uses: "builtin:noop"}}}
    - id: chunked
      map: {items: "inputs.many", maxParallel: 100000, step: {id: two, run: {uses: "builtin:noop"}}}
"""

SCHEDULED = EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
CHILD = EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED
TASK_DONE = EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
TASK_FAILED = EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED


def starts_per_task(events: list[HistoryEvent]) -> list[int]:
    """What each completed workflow task started, in activity starts (a chunk counts as its cost):
    the commands a task sends are the events recorded right after its WorkflowTaskCompleted."""
    spent: list[int] = []
    for event in events:
        if event.event_type == TASK_DONE:
            spent.append(0)
        elif event.event_type == SCHEDULED and spent:
            spent[-1] += 1
        elif event.event_type == CHILD and spent:
            spent[-1] += CHUNK_START_COST
    return spent


async def test_a_wide_map_starts_its_items_over_several_workflow_tasks(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    client = dev_env.client
    tq = unique("tq")
    some = list(range(MAP_INLINE_LIMIT))  # the most that runs inline, all allowed at once
    # Six chunks, all allowed at once: more than one task's worth of chunk starts.
    many = list(range(5 * MAP_CHUNK_SIZE + 1))
    async with worker_for(client, tmp_path, tq):
        handle = await start_pack(client, tq, WIDE, {"many": many, "some": some})
        result = await asyncio.wait_for(handle.result(), timeout=300)
        assert result.status == "succeeded", result.error
        state = await state_of(handle)
        histories = [(handle.id, (await handle.fetch_history()).events)]
        async for chunk in client.list_workflows(f"WorkflowId STARTS_WITH '{handle.id}/'"):
            history = await client.get_workflow_handle(
                chunk.id, run_id=chunk.run_id
            ).fetch_history()
            histories.append((chunk.id, history.events))

    succeeded = [
        s for s in state.steps if s.status == "Succeeded" and s.templateId in ("one", "two")
    ]
    assert len(succeeded) == len(some) + len(many)
    assert len(histories) == 1 + 6
    for workflow_id, events in histories:
        assert not [e for e in events if e.event_type == TASK_FAILED], workflow_id
        spent = starts_per_task(list(events))
        assert max(spent) <= STARTS_PER_TASK, (workflow_id, spent)


ECHO_MAP = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: echoes, version: 1.0.0}
spec:
  inputs: [{name: items, type: array}]
  steps:
    - id: fan
      map:
        items: "inputs.items"
        step: {id: one, when: "{{ item != `7` }}", run: {uses: "builtin:echo", with: {i: "{{ item }}"}}}
"""


async def test_a_chunk_names_its_plain_items_by_range_and_the_run_still_shows_each(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Items that simply succeeded come back to the parent as index ranges (their outputs once, in
    the map's results), not a state per item; the run's state still shows every item as it ran."""
    client = dev_env.client
    tq = unique("tq")
    items = list(range(MAP_INLINE_LIMIT + 100))  # one chunk
    async with worker_for(client, tmp_path, tq):
        handle = await start_pack(client, tq, ECHO_MAP, {"items": items})
        result = await asyncio.wait_for(handle.result(), timeout=120)
        assert result.status == "succeeded", result.error
        state = await state_of(handle)
        history = await handle.fetch_history()

    steps = {s.stepId: s for s in state.steps}
    skipped = steps["fan[7]::one"]
    assert (skipped.status, skipped.statusReason) == ("Skipped", "condition-false")
    for index in items:
        if index == 7:
            continue
        one = steps[f"fan[{index}]::one"]
        assert (one.status, one.attempts, one.outputs) == ("Succeeded", 1, {"i": index})
        assert one.lastTransitionAt is not None
    results = steps["fan"].outputs["results"]
    assert results[:9] == [{"i": i} for i in range(7)] + [{}, {"i": 8}]

    (done,) = [
        e
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED
    ]
    size = done.child_workflow_execution_completed_event_attributes.result.ByteSize()
    # Each item's output ({"i": n}: about 10 bytes) once, plus the skipped item's whole state;
    # a state per item, as before, is about 300 bytes each.
    assert size < 30 * len(items) + 2_000, size


BY_REFERENCE = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: byref, version: 1.0.0}
spec:
  inputs: [{name: items, type: array}]
  steps:
    - id: fan
      map: {items: "inputs.items", step: {id: one, run: {uses: "builtin:echo", with: {s: "{{ item }}"}}}}
"""


async def test_chunks_get_their_items_by_reference_not_in_the_parents_history(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """The parent stores a large map's items once; each chunk loads its own slice, so the
    parent's history holds the items only in its input, not again in every chunk's start."""
    client = dev_env.client
    tq = unique("tq")
    items = [f"{i:06d}-" + "x" * 200 for i in range(MAP_CHUNK_SIZE + 100)]  # two chunks
    async with worker_for(client, tmp_path, tq):
        handle = await start_pack(client, tq, BY_REFERENCE, {"items": items})
        result = await asyncio.wait_for(handle.result(), timeout=120)
        assert result.status == "succeeded", result.error
        state = await state_of(handle)
        parent = await handle.fetch_history()
        chunk = await client.get_workflow_handle(f"{handle.id}/fan/chunk-1").fetch_history()

    steps = {s.stepId: s for s in state.steps}
    assert steps["fan"].outputs["results"] == [{"s": item} for item in items]
    assert steps[f"fan[{len(items) - 1}]::one"].outputs == {"s": items[-1]}
    starts = [
        e.start_child_workflow_execution_initiated_event_attributes.input.ByteSize()
        for e in parent.events
        if e.event_type == CHILD
    ]
    # By value, chunk 0's start alone would carry 500 items of 207 bytes (over 100 KB).
    assert len(starts) == 2 and max(starts) < 10_000, starts
    # The chunk's own history records its slice (and only its slice) where it loaded it.
    recorded = b"".join(event.SerializeToString() for event in chunk.events)
    assert items[MAP_CHUNK_SIZE].encode() in recorded and items[-1].encode() in recorded
    assert items[MAP_CHUNK_SIZE - 1].encode() not in recorded
