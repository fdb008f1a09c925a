"""Patches are decided before local activities (workflows/patches.py).

Temporal's core can record a local activity's marker in one workflow task and what the code did
after it in the next (the worker dropped the workflow from its cache meanwhile). A full replay runs
that code in the first task, where a patch first asked for after the activity is not known yet: a
run cancelled during a map in levels then failed every workflow task with TMPRL1100 and stayed
Running. What keeps every history safe from that: no patch marker after a local activity's.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from tests.helpers import (
    result_of,
    run_histories,
    start_pack,
    unique,
    worker_for,
)
from tests.workflows.record_history import (
    LEVELS_CONSTANTS,
    LOCAL_ACTIVITY,
    PATCHES_FIRST,
    markers,
    shrunk,
)
from workflows.patches import PATCH_DECIDED_FIRST, PATCH_MAP_LEVELS, PATCHES


async def test_no_patch_is_first_asked_for_after_a_local_activity(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """A run that pages its log out between steps (a local activity) and fans a map out in levels
    (its items stored by a local activity, each chunk loading its own by another): in the run's
    history and every chunk's, every patch marker comes before the first local activity's, and
    each patch is marked once."""
    client = dev_env.client
    tq = unique("tq")
    with shrunk(LEVELS_CONSTANTS):
        async with worker_for(client, tmp_path, tq):
            items = {"items": list(range(20))}
            handle = await start_pack(client, tq, PATCHES_FIRST, items, logsKeptInRun=2)
            result = await asyncio.wait_for(result_of(handle), timeout=120)
            assert result.status == "succeeded", result.error
    found = await run_histories(client, handle.id)
    run = markers(found[handle.id])
    # The log was paged out before the map, which then stored its items and fanned out in levels.
    assert run.count(LOCAL_ACTIVITY) >= 2, run
    assert any("/chunks-" in w for w in found), sorted(found)
    chunks = [w for w in found if w.rsplit("/", 1)[-1].startswith("chunk-")]
    assert len(chunks) == 4
    for workflow_id in [handle.id, *chunks]:
        seen = markers(found[workflow_id])
        first = seen.index(LOCAL_ACTIVITY)
        after = [m for m in seen[first:] if m != LOCAL_ACTIVITY]
        assert after == [], (workflow_id, seen)
        patches = seen[:first]
        assert sorted(patches) == sorted({PATCH_DECIDED_FIRST, *PATCHES}), (workflow_id, seen)
    assert PATCH_MAP_LEVELS in run
