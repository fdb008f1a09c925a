"""A map whose items are a `range` (docs/manifest.md): counted, never listed. Its chunks compute
their own slice of the range, so nothing is stored for them and no start carries items, whether
the run starts the chunks itself or through groups of them (workflows/map_levels.py).

The sizes are shrunk (chunks of 5 items, inline up to 4) so a few dozen items fan out; the worker
runs in this process, so the workflow code reads the same `compiler.history` the test patches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from compiler import history
from tests.helpers import result_of, run_histories, start_pack, state_of, unique, worker_for
from workflows.contract.artifacts import MAPS

CHILD = EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(history, "MAP_INLINE_LIMIT", 4)
    monkeypatch.setattr(history, "MAP_CHUNK_SIZE", 5)
    yield


def pack(items: str, *, continue_on_error: bool = False) -> str:
    return f"""
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {{name: ranges, version: 1.0.0}}
spec:
  steps:
    - id: fan
      continueOnError: {str(continue_on_error).lower()}
      map:
        items: {items}
        maxParallel: 100
        step:
          id: pick
          conditional:
            branches:
              - condition: "item == `37`"
                steps: [{{id: bad, run: {{uses: builtin:fail, with: {{message: "37 is bad"}}}}}}]
            else: [{{id: one, run: {{uses: builtin:echo, with: {{v: "{{{{ item }}}}", i: "{{{{ index }}}}"}}}}}}]
    - {{id: after, run: {{uses: builtin:echo, with: {{n: "{{{{ length(steps.fan.outputs.results) }}}}"}}}}}}
"""


def stored_items(data_dir: Path) -> list[Path]:
    return [p for p in data_dir.rglob("*") if p.is_dir() and p.name == MAPS]


@pytest.mark.parametrize("width", [100, 3], ids=["chunks", "levels"])
async def test_a_map_of_a_range_fans_out_with_no_stored_or_sent_items(
    dev_env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, width: int
) -> None:
    # 100, 98, ..., 4: 49 items in 10 chunks (the last one short), started by the run itself or
    # (3 children per workflow) through groups of chunks.
    monkeypatch.setattr(history, "MAP_CHILDREN_PER_WORKFLOW", width)
    values = list(range(100, 2, -2))
    client = dev_env.client
    tq = unique("tq")
    async with worker_for(client, tmp_path, tq):
        handle = await start_pack(client, tq, pack("{range: {start: 100, end: 2, step: -2}}"))
        result = await asyncio.wait_for(result_of(handle), timeout=240)
        assert result.status == "succeeded", result.error
        state = await state_of(handle)
    found = await run_histories(client, handle.id)

    steps = {s.stepId: s for s in state.steps}
    # Each item got its own value and index, in order, and the step after read them all.
    assert steps["fan"].outputs["results"] == [{"branch": "else"} for _ in values]
    for index, value in enumerate(values):
        one = steps[f"fan[{index}]::one"]
        assert (one.status, one.outputs) == ("Succeeded", {"v": value, "i": index})
    assert steps["after"].outputs == {"n": len(values)}

    chunks = [w for w in found if w.rsplit("/", 1)[-1].startswith("chunk-")]
    groups = [w for w in found if w.rsplit("/", 1)[-1].startswith("chunks-")]
    assert len(chunks) == 10
    assert (len(groups) > 0) == (width == 3)
    # Nothing was stored for the chunks, and no start carried items: a chunk's input is the same
    # few hundred bytes whatever the map's size.
    assert stored_items(tmp_path) == []
    for workflow_id, events in found.items():
        for event in events:
            if event.event_type == CHILD:
                size = event.start_child_workflow_execution_initiated_event_attributes.input
                assert size.ByteSize() < 6_000, workflow_id


async def test_a_failing_item_of_a_range_map_is_reported_with_its_value(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    client = dev_env.client
    tq = unique("tq")
    async with worker_for(client, tmp_path, tq):
        handle = await start_pack(
            client, tq, pack("{range: {start: 30, end: 45}}", continue_on_error=True)
        )
        result = await asyncio.wait_for(result_of(handle), timeout=240)
        state = await state_of(handle)

    # The map went on past item 7 (value 37) as told; the run went on to `after`.
    assert result.status == "succeeded", result.error
    steps = {s.stepId: s for s in state.steps}
    assert steps["fan"].status == "Failed"
    assert steps["fan[7]::bad"].status == "Failed"
    assert steps["fan[7]::bad"].statusReason == "step-failed"
    assert steps["fan[14]::one"].outputs == {"v": 44, "i": 14}
    assert steps["after"].outputs == {"n": 15}
