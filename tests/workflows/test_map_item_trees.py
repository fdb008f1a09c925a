"""A map item whose template holds a loop (or a map) has steps no plan registers ahead: the
loop's iterations. A large map (in chunks, or in levels) shows them as a small map run in the run
itself does, so a user can see which iteration of which item failed.

Sizes are shrunk (chunks of 3 items) so 12 items fan out: in chunks when the run may start 100
children, in levels when it may start 2."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from compiler import history
from tests.helpers import result_of, start_pack, state_of, unique, worker_for

ITEMS = 12
PACK = f"""
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {{name: item-trees, version: 1.0.0}}
spec:
  steps:
    - id: fan
      continueOnError: true
      map:
        items: {{range: {{end: {ITEMS}}}}}
        continueOnError: true
        step:
          id: inner
          loop:
            items: {{range: {{end: 2}}}}
            iterator: j
            steps:
              - {{id: quiet, run: {{uses: "builtin:noop"}}}}
              - {{id: bad, when: "{{{{ item == `5` && j == `1` }}}}", run: {{uses: "builtin:fail", with: {{message: "item 5, iteration 1"}}}}}}
              - {{id: x, when: "{{{{ item != `7` }}}}", run: {{uses: "builtin:echo", with: {{x: "{{{{ j }}}}"}}}}}}
    - {{id: after, run: {{uses: "builtin:echo", with: {{r: "{{{{ steps.fan.outputs.results }}}}"}}}}}}
"""


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(history, "MAP_CHUNK_SIZE", 3)
    yield


def seen(state: Any) -> list[tuple[Any, ...]]:
    return [(s.stepId, s.parentId, s.status, s.statusReason, s.outputs) for s in state.steps]


@pytest.mark.parametrize("children", [100, 2], ids=["chunks", "levels"])
async def test_a_large_map_shows_the_steps_inside_its_items_as_a_small_one_does(
    dev_env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, children: int
) -> None:
    monkeypatch.setattr(history, "MAP_CHILDREN_PER_WORKFLOW", children)
    client = dev_env.client
    tq = unique("tq")
    views = []
    async with worker_for(client, tmp_path, tq):
        for inline in (100, 4):
            monkeypatch.setattr(history, "MAP_INLINE_LIMIT", inline)
            handle = await start_pack(client, tq, PACK)
            result = await result_of(handle)
            state = await state_of(handle)
            views.append((result.status, state.totalSteps, seen(state)))
    small, large = views
    steps = {s[0]: s for s in small[2]}
    # What a user looks for: the iteration step that failed, in the item it failed in.
    assert steps["fan[5]::inner[1]::bad"][2] == "Failed"
    assert steps["fan[7]::inner[0]::x"][3] == "condition-false"
    assert large == small
