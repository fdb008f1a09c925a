"""A map of more chunks than one workflow may start fans out in levels (workflows/map_levels.py):
the run starts groups, groups start smaller groups or the chunks, and every history stays small.

The sizes are shrunk (chunks of 5 items, 3 children per workflow) so 100 items make three levels
below the run: 3 groups, 6 smaller groups, 20 chunks. The worker runs in this process, so the
workflow code reads the same `compiler.history` module the test patches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from compiler import history
from tests.helpers import (
    result_of,
    run_histories,
    start_pack,
    state_of,
    unique,
    wait_for,
    whole_log,
    worker_for,
)
from workflows import pack_run
from workflows.contract.names import SIGNAL_CANCEL
from workflows.contract.state import CancelSignal, CarriedState
from workflows.run_book import RunBook

CHILD = EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED
ITEMS = 100
WIDTH = 3


@pytest.fixture(autouse=True)
def small_levels(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(history, "MAP_INLINE_LIMIT", 4)
    monkeypatch.setattr(history, "MAP_CHUNK_SIZE", 5)
    monkeypatch.setattr(history, "MAP_CHILDREN_PER_WORKFLOW", WIDTH)
    yield


def pack(template: str, *, max_parallel: int = 100, continue_on_error: bool = False) -> str:
    return f"""
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {{name: levels, version: 1.0.0}}
spec:
  inputs: [{{name: items, type: array}}]
  steps:
    - id: fan
      continueOnError: {str(continue_on_error).lower()}
      map: {{items: "inputs.items", maxParallel: {max_parallel}, step: {template}}}
    - {{id: after, run: {{uses: "builtin:echo", with: {{n: "{{{{ length(steps.fan.outputs.results) }}}}"}}}}}}
"""


ECHO = '{id: one, when: "{{ item != `42` }}", run: {uses: "builtin:echo", with: {i: "{{ item }}"}}}'
FAILING = """{id: pick, conditional: {branches: [{condition: "item == `13`", steps: [{id: bad, run: {uses: "builtin:fail", with: {message: "item 13 is bad"}}}]}], else: [{id: ok, run: {uses: "builtin:noop"}}]}}"""
SLEEPY = '{id: nap, run: {uses: "builtin:sleep", with: {seconds: 120}}}'


async def test_a_map_fans_out_in_three_levels_and_every_history_stays_small(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    client = dev_env.client
    tq = unique("tq")
    async with worker_for(client, tmp_path, tq):
        handle = await start_pack(client, tq, pack(ECHO), {"items": list(range(ITEMS))})
        result = await asyncio.wait_for(result_of(handle), timeout=240)
        assert result.status == "succeeded", result.error
        state = await state_of(handle)
        # The Web UI shows how far a group is (its current details).
        group = client.get_workflow_handle(f"{handle.id}/fan/chunks-0-8")
        metadata = await group.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        assert metadata.current_details == "`fan` items 0..44: 45 of 45 done"
    found = await run_histories(client, handle.id)

    steps = {s.stepId: s for s in state.steps}
    # What the user sees: every item's state and outputs, in order, and the step after reads them.
    assert steps["fan"].outputs["results"] == [{} if i == 42 else {"i": i} for i in range(ITEMS)]
    assert steps["after"].outputs == {"n": ITEMS}
    for index in range(ITEMS):
        one = steps[f"fan[{index}]::one"]
        if index == 42:
            assert (one.status, one.statusReason) == ("Skipped", "condition-false")
        else:
            assert (one.status, one.attempts, one.outputs) == ("Succeeded", 1, {"i": index})
    assert state.totalSteps == 2 + ITEMS

    groups = [w for w in found if w.rsplit("/", 1)[-1].startswith("chunks-")]
    chunks = [w for w in found if w.rsplit("/", 1)[-1].startswith("chunk-")]
    assert len(chunks) == ITEMS // 5
    # Three levels below the run: groups, groups inside them, then chunks.
    assert len(groups) == 3 + 6
    assert any(w.count("/chunks-") == 2 for w in chunks)
    for workflow_id, events in found.items():
        started = sum(1 for e in events if e.event_type == CHILD)
        assert started <= WIDTH, (workflow_id, started)
        assert len(events) < 150, (workflow_id, len(events))


async def test_a_failing_item_fails_the_map_and_the_rest_is_skipped(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    client = dev_env.client
    tq = unique("tq")
    async with worker_for(client, tmp_path, tq):
        handle = await start_pack(
            client, tq, pack(FAILING, max_parallel=1), {"items": list(range(ITEMS))}
        )
        result = await asyncio.wait_for(result_of(handle), timeout=240)
        state = await state_of(handle)

    assert result.status == "failed"
    assert result.error == "step fan failed (child-failed)"
    steps = {s.stepId: s for s in state.steps}
    failed = [s for s in state.steps if s.status == "Failed"]
    assert steps["fan"].status == "Failed"
    assert "fan[13]::pick" in {s.stepId for s in failed}
    bad = next(s for s in failed if s.stepId.startswith("fan[13]::") and s.stepId.endswith("bad"))
    assert bad.statusReason == "step-failed"
    assert steps["after"].status == "Skipped"
    # One at a time: items before 13 ran, those in chunks never started were skipped.
    assert all(steps[f"fan[{i}]::pick"].status == "Succeeded" for i in range(13))
    later = [steps[f"fan[{i}]::pick"] for i in range(15, ITEMS)]
    assert {(s.status, s.statusReason) for s in later} == {("Skipped", "previous-step-failed")}


async def test_continue_on_error_runs_every_item_past_a_failure(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    client = dev_env.client
    tq = unique("tq")
    async with worker_for(client, tmp_path, tq):
        handle = await start_pack(
            client,
            tq,
            pack(FAILING, max_parallel=1, continue_on_error=True),
            {"items": list(range(ITEMS))},
        )
        result = await asyncio.wait_for(result_of(handle), timeout=240)
        state = await state_of(handle)

    assert result.status == "succeeded", result.error
    steps = {s.stepId: s for s in state.steps}
    assert steps["fan"].status == "Failed"
    assert steps["fan[13]::pick"].status == "Failed"
    assert all(steps[f"fan[{i}]::pick"].status == "Succeeded" for i in range(ITEMS) if i != 13)
    assert steps["after"].outputs == {"n": ITEMS}


async def test_too_large_results_fail_the_map_with_a_reason(
    dev_env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history, "MAP_RESULTS_LIMIT_BYTES", 300)
    monkeypatch.setattr(history, "MAP_RESULTS_FLOOR_BYTES", 100)
    client = dev_env.client
    tq = unique("tq")
    async with worker_for(client, tmp_path, tq):
        handle = await start_pack(client, tq, pack(ECHO), {"items": list(range(ITEMS))})
        result = await asyncio.wait_for(result_of(handle), timeout=240)
        state = await state_of(handle)

    assert result.status == "failed"
    fan = next(s for s in state.steps if s.stepId == "fan")
    assert (fan.status, fan.statusReason) == ("Failed", "map-results-too-large")
    assert result.error == "step fan failed (map-results-too-large)"


FILTER = (
    '{id: one, when: "{{ item.keep }}", run: {uses: "builtin:echo", with: {i: "{{ item.i }}"}}}'
)


async def test_items_skipped_by_their_condition_cost_a_bit_each(
    dev_env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filter that skips every third item: the groups name those items in a bitmap, so a
    budget far below a state per skipped item (about 330 bytes each) is enough."""
    monkeypatch.setattr(history, "MAP_RESULTS_LIMIT_BYTES", 4_000)
    monkeypatch.setattr(history, "MAP_RESULTS_FLOOR_BYTES", 500)
    client = dev_env.client
    tq = unique("tq")
    items = [{"i": i, "keep": i % 3 != 0} for i in range(ITEMS)]
    async with worker_for(client, tmp_path, tq):
        handle = await start_pack(client, tq, pack(FILTER), {"items": items})
        result = await asyncio.wait_for(result_of(handle), timeout=240)
        assert result.status == "succeeded", result.error
        state = await state_of(handle)

    steps = {s.stepId: s for s in state.steps}
    assert steps["fan"].outputs["results"] == [{"i": i} if i % 3 else {} for i in range(ITEMS)]
    for index in range(ITEMS):
        one = steps[f"fan[{index}]::one"]
        if index % 3:
            assert (one.status, one.outputs, one.enabled) == ("Succeeded", {"i": index}, True)
        else:
            assert (one.status, one.statusReason, one.enabled) == (
                "Skipped",
                "condition-false",
                False,
            )


@pytest.mark.parametrize("cache", ["cached", "uncached"])
# A worker that caches nothing drops the run while its local activity runs; the SDK then warns
# that the activity core asks it to cancel has already finished (harmless: core keeps its result).
@pytest.mark.filterwarnings("ignore:Cannot find activity to cancel:UserWarning")
async def test_cancelling_the_run_stops_every_group_and_chunk(
    dev_env: WorkflowEnvironment, tmp_path: Path, cache: str
) -> None:
    """Also on a worker that caches no workflow, so every task replays the whole history: the
    state query as the run starts can make core write the items' local activity in one task and the
    group's start in the next. Before every patch was decided ahead of local activities
    (workflows/patches.py), a full replay then failed each task after the cancel with TMPRL1100
    and the run stayed Running (seen in CI with the cache on, too)."""
    client = dev_env.client
    tq = unique("tq")
    options = {"max_cached_workflows": 0} if cache == "uncached" else {}
    async with worker_for(client, tmp_path, tq, **options):
        # maxParallel 20: four chunks of five at a time, across all groups.
        manifest = pack(SLEEPY, max_parallel=20)
        handle = await start_pack(client, tq, manifest, {"items": list(range(ITEMS))})
        await wait_for(handle, lambda s: s.status == "running")
        running: dict[str, Any] = {}
        deadline = asyncio.get_running_loop().time() + 60
        query = f"WorkflowId STARTS_WITH '{handle.id}/' AND ExecutionStatus = 'Running'"
        # Wait until chunks three levels down are running, and a little longer: no more start.
        while sum(1 for w in running if w.count("/chunks-") == 2) < 4:
            assert asyncio.get_running_loop().time() < deadline, sorted(running)
            await asyncio.sleep(0.5)
            running = {w.id: w async for w in client.list_workflows(query)}
        await asyncio.sleep(2)
        running = {w.id: w async for w in client.list_workflows(query)}
        chunks = [w for w in running if w.rsplit("/", 1)[-1].startswith("chunk-")]
        assert len(chunks) == 4, sorted(running)
        await handle.signal(
            SIGNAL_CANCEL, CancelSignal(actorId="ops", reason="enough", temporalCancelFollows=True)
        )
        await handle.cancel(reason="enough")
        for workflow_id in running:
            child = client.get_workflow_handle(workflow_id)
            for _ in range(120):
                status = (await child.describe()).status
                if status != WorkflowExecutionStatus.RUNNING:
                    break
                await asyncio.sleep(0.5)
            assert status in (
                WorkflowExecutionStatus.CANCELED,
                WorkflowExecutionStatus.TERMINATED,
            ), (workflow_id, status)
        assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
        state = await state_of(handle)
    # Every item still shows, none left running: those cut off mid-way failed, the rest skipped.
    items = [s for s in state.steps if s.parentId == "fan"]
    assert len(items) == ITEMS
    assert {(s.status, s.statusReason) for s in items} <= {
        ("Skipped", "cancelled"),
        ("Failed", "cancelled"),
    }
    assert state.status == "cancelled"


async def test_a_new_worker_takes_a_map_in_levels_over_half_way(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """The worker stops with groups and chunks under way; a fresh one (nothing cached: it replays
    the run, its groups and its chunks from their histories) finishes the map, every item once."""
    client = dev_env.client
    tq = unique("tq")
    # One second an item, two chunks at a time: about ten seconds in all.
    slow = '{id: one, run: {uses: "builtin:sleep", with: {seconds: 1}}}'
    async with worker_for(client, tmp_path, tq):
        handle = await start_pack(
            client, tq, pack(slow, max_parallel=10), {"items": list(range(ITEMS))}
        )
        done = f"WorkflowId STARTS_WITH '{handle.id}/' AND ExecutionStatus = 'Completed'"
        deadline = asyncio.get_running_loop().time() + 60
        while (await client.count_workflows(done)).count < 3:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.5)
    async with worker_for(client, tmp_path, tq):
        result = await asyncio.wait_for(result_of(handle), timeout=240)
        assert result.status == "succeeded", result.error
        state = await state_of(handle)
    steps = {s.stepId: s for s in state.steps}
    assert steps["after"].outputs == {"n": ITEMS}
    for index in range(ITEMS):
        one = steps[f"fan[{index}]::one"]
        assert (one.status, one.attempts) == ("Succeeded", 1), one


async def test_a_run_past_a_map_in_levels_never_builds_its_items_states_to_carry(
    dev_env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A map in levels holds 50,000+ items: building their states to measure the carried state
    takes seconds in one workflow task (past the deadlock deadline), only to be refused. The
    count refuses it: the run warns once, goes on in its history and finishes."""
    built: list[int] = []
    carry = RunBook.carry

    def counted(book: RunBook) -> CarriedState:
        built.append(len(book.held))
        return carry(book)

    monkeypatch.setattr(RunBook, "carry", counted)
    # 100 held items of one step are a floor of 10,000 bytes: over this limit.
    monkeypatch.setattr(pack_run, "CARRY_LIMIT_BYTES", 5_000)
    client = dev_env.client
    tq = unique("tq")
    async with worker_for(client, tmp_path, tq):
        run_id = unique("run")
        handle = await start_pack(
            client,
            tq,
            pack(ECHO),
            {"items": list(range(ITEMS))},
            run_id=run_id,
            continueAsNewAfterEvents=10,
        )
        result = await asyncio.wait_for(result_of(handle), timeout=240)
        entries = await whole_log(client, tmp_path, run_id)
    assert result.status == "succeeded", result.error
    assert [e.eventType for e in entries].count("run.continue-as-new-skipped") == 1
    assert not [held for held in built if held], "a map in levels' states were built to carry"
