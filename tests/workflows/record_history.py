"""Record histories of representative runs for the replay test (tests/workflows/test_replay.py).

    .venv/bin/python -m tests.workflows.record_history NAME...

NAME is one of `representative` (every step kind, an approval, a retry), `chunked-map` (a map
large enough to fan out: the parent's history and its chunk's), `wide-map` (a map whose item starts
are spread over several workflow tasks), `nested-paging` (a loop whose log is paged out between
its own steps), `continue-as-new` (a run that
continued as new twice: its first history and its last), `cancelled` (cancelled while a gate
waits), `failed` (a step fails: the workflow closes as Failed) or `cancelled-closed-canceled`
(cancelled as the API does it, the signal then Temporal's request: closes as Canceled) or
`cancelled-state-in-memo` (the same, since the run leaves its final state in its memo) or
`continue-inside-loop` (a run that continued as new inside a loop and a conditional in it: its
first history and the one after, which walks the plan again and resumes there) or `map-levels`
(a map that fans out in levels, recorded under small sizes kept in history_constants.json: the
run's history, a group that starts groups, a group that starts chunks) or `map-levels-held` (the
same since the run holds the items as a status each) or `paged-iterations` (a long loop whose
finished iterations were paged out to the artifact store before it continued as new: that
history and the next, handed the segments) or `map-range` (a map of a `range`, whose chunks
compute their own items: the run and its last chunk, started by the run and through groups) or
`patches-first` (every patch decided before the first local activity: a run that pages its log
out and fans a map out in levels, and one of its chunks) or `map-levels-cancelled-split` (a map
in levels cancelled mid-way on a worker that caches no workflow, whose history core split around
the items' local activity) or `map-beside-steps-split` (the same split, the map beside 45 steps
in a parallel block, whose starts after the activity depend on the start budget). A committed history is never re-recorded to make a change pass: a change that makes one
fail to replay would break running workflows, so it goes behind `workflow.patched()`. Record a
new one for a new shape of run.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sys
import sysconfig
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowHistory,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from compiler.history import MAP_INLINE_LIMIT
from tests.helpers import keep_asking, result_of, start_pack, unique, wait_for, worker_for
from workflows.contract.names import (
    MEMO_FINAL_STATE,
    SEARCH_ATTRIBUTES,
    SIGNAL_CANCEL,
    UPDATE_DECIDE_APPROVAL,
)
from workflows.contract.state import (
    ApprovalOutcome,
    ApprovalSignal,
    CancelSignal,
    PackRunInput,
    RunResult,
    RunStateSnapshot,
)

HISTORIES = Path(__file__).parent / "histories"
WORKFLOW_IDS = Path(__file__).parent / "history_workflow_ids.json"
CONSTANTS = Path(__file__).parent / "history_constants.json"
"""compiler.history's sizes a history was recorded under, where they are not the defaults."""

PACK = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: representative, version: 1.0.0}
spec:
  inputs:
    - {name: hosts, type: array, default: [a, b, c]}
    - {name: env, type: string, default: prod}
  approvals: [{id: release, grants: [deploy], requiredApprovals: 1}]
  policies: [{id: small, version: "1", condition: "length(inputs.hosts) < `10`"}]
  failure: {maxAttempts: 2, backoffSeconds: 1}
  steps:
    - {id: build, run: {uses: "builtin:shell", with: {command: "echo built"}}}
    - id: checks
      parallel:
        steps:
          - {id: lint, run: {uses: "builtin:echo", with: {ok: true}}}
          - {id: policy, gate: {policy: {policy: small, failureAction: abort}}}
    - id: ping
      map: {items: "inputs.hosts", maxParallel: 2, step: {id: one, run: {uses: "builtin:echo", with: {host: "{{ item }}"}}}}
    - id: rounds
      loop: {items: {range: {end: 2}}, steps: [{id: r, run: {uses: "builtin:noop"}}]}
    - id: route
      conditional:
        branches: [{condition: "inputs.env == 'prod'", steps: [{id: approve, gate: {approval: {id: release}}}]}]
        else: [{id: skip, run: {uses: "builtin:noop"}}]
    - {id: flaky, continueOnError: true, run: {uses: "builtin:fail", with: {message: expected}}}
    - {id: deploy, run: {uses: "builtin:echo", with: {hosts: "{{ steps.ping.outputs.results[*].host }}"}}}
"""


CHUNKED = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: chunked, version: 1.0.0}
spec:
  inputs: [{name: items, type: array}]
  steps:
    - {id: before, run: {uses: "builtin:echo", with: {n: "{{ length(inputs.items) }}"}}}
    - id: fan
      map: {items: "inputs.items", maxParallel: 50, step: {id: one, run: {uses: "builtin:echo", with: {i: "{{ item }}"}}}}
    - {id: after, run: {uses: "builtin:echo", with: {n: "{{ length(steps.fan.outputs.results) }}"}}}
"""

WIDE = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: wide, version: 1.0.0}
spec:
  inputs: [{name: items, type: array}]
  steps:
    - id: fan
      map: {items: "inputs.items", maxParallel: 100, step: {id: one, run: {uses: "builtin:noop"}}}
"""

NESTED = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: nested, version: 1.0.0}
spec:
  steps:
    - id: each
      loop:
        items: {range: {start: 0, end: 8, step: 1}}
        steps:
          - {id: a, run: {uses: "builtin:echo", with: {i: "{{ item }}"}}}
          - {id: b, run: {uses: "builtin:noop"}}
    - {id: tail, run: {uses: "builtin:noop"}}
"""

CONTINUED = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: continued, version: 1.0.0}
spec:
  approvals: [{id: mid}]
  steps:
STEPS
    - {id: gate, gate: {approval: {id: mid}}}
    - {id: tail, run: {uses: "builtin:echo", with: {first: "{{ steps.s0.outputs.i }}"}}}
""".replace(
    "STEPS",
    "\n".join(
        f'    - {{id: s{i}, run: {{uses: "builtin:echo", with: {{i: {i}}}}}}}' for i in range(12)
    ),
)

INSIDE_LOOP = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: inside-loop, version: 1.0.0}
spec:
  steps:
    - {id: first, run: {uses: "builtin:echo", with: {n: 1}}}
    - id: each
      loop:
        items: {range: {start: 0, end: 6, step: 1}}
        steps:
          - {id: a, run: {uses: "builtin:echo", with: {i: "{{ item }}"}}}
          - id: route
            conditional:
              branches: [{condition: "{{ item > `2` }}", steps: [{id: b, run: {uses: "builtin:noop"}}, {id: c, run: {uses: "builtin:noop"}}]}]
              else: [{id: d, run: {uses: "builtin:noop"}}]
    - {id: tail, run: {uses: "builtin:echo", with: {seen: "{{ steps.each.outputs.results }}"}}}
"""

PAGED = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: paged-iterations, version: 1.0.0}
spec:
  steps:
    - id: each
      loop:
        items: {range: {start: 0, end: 130, step: 1}}
        steps:
          - {id: a, run: {uses: "builtin:echo", with: {i: "{{ item }}"}}}
          - {id: b, run: {uses: "builtin:noop"}}
    - {id: tail, run: {uses: "builtin:echo", with: {n: "{{ length(steps.each.outputs.results) }}"}}}
"""

CANCELLED = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: cancelled, version: 1.0.0}
spec:
  approvals: [{id: go, expiresAfterSeconds: 3600}]
  steps:
    - {id: first, run: {uses: "builtin:echo", with: {ok: true}}}
    - id: both
      parallel:
        steps:
          - {id: wait, gate: {approval: {id: go}}}
          - {id: slow, run: {uses: "builtin:sleep", with: {seconds: 60}}}
    - {id: never, run: {uses: "builtin:noop"}}
"""

FAILED = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: failed, version: 1.0.0}
spec:
  steps:
    - {id: first, run: {uses: "builtin:echo", with: {ok: true}}}
    - {id: broken, run: {uses: "builtin:fail", with: {message: "broken on purpose"}}}
    - {id: never, run: {uses: "builtin:noop"}}
"""


async def _approve(handle: WorkflowHandle[Any, Any], approval_id: str, plan_hash: str) -> None:
    await handle.execute_update(
        UPDATE_DECIDE_APPROVAL,
        ApprovalSignal(
            approvalId=approval_id, decision="approved", planHash=plan_hash, actorId="ops"
        ),
        result_type=ApprovalOutcome,
    )


async def _save(name: str, handle: WorkflowHandle[Any, Any]) -> None:
    history = await handle.fetch_history()
    (HISTORIES / f"{name}.json").write_text(history.to_json())
    # Replay needs the workflow's own id where the workflow uses it (a chunk's child id is built
    # from its parent's); a history file holds only events, so the ids are kept beside them.
    ids = json.loads(WORKFLOW_IDS.read_text()) if WORKFLOW_IDS.exists() else {}
    ids[name] = handle.id
    WORKFLOW_IDS.write_text(json.dumps(ids, indent=2, sort_keys=True) + "\n")
    print(f"wrote {name}.json ({len(history.events)} events)")


async def representative(client: Client, tq: str) -> None:
    handle = await start_pack(client, tq, PACK, run_id="representative")
    state = await wait_for(handle, lambda s: s.status == "awaiting-approval")
    await _approve(handle, "release", state.planHash)
    result = await handle.result()
    assert result.status == "succeeded", result
    await _save("representative", handle)


async def chunked_map(client: Client, tq: str) -> None:
    items = list(range(MAP_INLINE_LIMIT + 1))  # just past the limit: one chunk workflow
    handle = await start_pack(client, tq, CHUNKED, {"items": items}, run_id="chunked-map")
    result = await handle.result()
    assert result.status == "succeeded", result
    await _save("chunked-map", handle)
    await _save("chunked-map-chunk", client.get_workflow_handle(f"{handle.id}/fan/chunk-0"))


async def wide_map(client: Client, tq: str) -> None:
    # More starts than one workflow task makes: spread over tasks (the bounded-starts patch).
    handle = await start_pack(client, tq, WIDE, {"items": list(range(60))}, run_id="wide-map")
    result = await handle.result()
    assert result.status == "succeeded", result
    await _save("wide-map", handle)


async def nested_paging(client: Client, tq: str) -> None:
    # A loop's log paged out between the steps inside it (the page-logs-out-inside-steps patch).
    handle = await start_pack(client, tq, NESTED, run_id="nested-paging", logsKeptInRun=10)
    result = await handle.result()
    assert result.status == "succeeded", result
    await _save("nested-paging", handle)


async def continue_as_new(client: Client, tq: str) -> None:
    handle = await start_pack(
        client, tq, CONTINUED, run_id="continue-as-new", continueAsNewAfterEvents=40
    )
    state = await wait_for(handle, lambda s: s.status == "awaiting-approval", timeout=60)
    latest = client.get_workflow_handle(handle.id, result_type=RunResult)
    await _approve(latest, "mid", state.planHash)
    result = await latest.result()
    assert result.status == "succeeded", result
    # The first run's history, which ends by continuing as new with the state it carries.
    first = client.get_workflow_handle(handle.id, run_id=handle.first_execution_run_id)
    await _save("continue-as-new-first", first)
    await _save("continue-as-new-last", latest)


async def cancelled(client: Client, tq: str) -> None:
    handle = await start_pack(client, tq, CANCELLED, run_id="cancelled")
    await wait_for(handle, lambda s: s.status == "awaiting-approval")
    await handle.signal(SIGNAL_CANCEL, CancelSignal(actorId="ops", reason="not today"))
    result = await handle.result()
    assert result.status == "cancelled", result
    await _save("cancelled", handle)


async def failed(client: Client, tq: str) -> None:
    handle = await start_pack(client, tq, FAILED, run_id="failed")
    result = await result_of(handle)
    assert result.status == "failed", result
    assert (await handle.describe()).status == WorkflowExecutionStatus.FAILED
    await _save("failed", handle)


async def cancelled_closed_canceled(client: Client, tq: str) -> None:
    handle = await start_pack(client, tq, CANCELLED, run_id="cancelled-closed-canceled")
    await wait_for(handle, lambda s: s.status == "awaiting-approval")
    signal = CancelSignal(actorId="ops", reason="not today", temporalCancelFollows=True)
    await handle.signal(SIGNAL_CANCEL, signal)
    await handle.cancel(reason="not today")
    with contextlib.suppress(WorkflowFailureError):
        await handle.result()
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    await _save("cancelled-closed-canceled", handle)


async def cancelled_state_in_memo(client: Client, tq: str) -> None:
    handle = await start_pack(client, tq, CANCELLED, run_id="cancelled-state-in-memo")
    await wait_for(handle, lambda s: s.status == "awaiting-approval")
    signal = CancelSignal(actorId="ops", reason="not today", temporalCancelFollows=True)
    await handle.signal(SIGNAL_CANCEL, signal)
    await handle.cancel(reason="not today")
    with contextlib.suppress(WorkflowFailureError):
        await handle.result()
    description = await handle.describe()
    assert description.status == WorkflowExecutionStatus.CANCELED
    held = await description.memo_value(MEMO_FINAL_STATE, type_hint=RunStateSnapshot)
    assert held.status == "cancelled", held
    await _save("cancelled-state-in-memo", handle)


async def continue_inside_loop(client: Client, tq: str) -> None:
    # Continued as new at boundaries inside the loop (the continue-as-new-inside-steps patch).
    handle = await start_pack(
        client, tq, INSIDE_LOOP, run_id="continue-inside-loop", continueAsNewAfterEvents=30
    )
    result = await client.get_workflow_handle(handle.id, result_type=RunResult).result()
    assert result.status == "succeeded", result
    runs = [e.run_id async for e in client.list_workflows(f"WorkflowId = '{handle.id}'")]
    assert len(runs) >= 3, runs
    first = client.get_workflow_handle(handle.id, run_id=handle.first_execution_run_id)
    await _save("continue-inside-loop-first", first)
    # The second history: handed a loop under way, it walks the plan again and resumes there.
    for run in runs:
        other = client.get_workflow_handle(handle.id, run_id=run)
        started = (
            (await other.fetch_history()).events[0].workflow_execution_started_event_attributes
        )
        if started.continued_execution_run_id == handle.first_execution_run_id:
            await _save("continue-inside-loop-resumed", other)
            return
    raise AssertionError("no history followed the first")


LEVELS = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: levels, version: 1.0.0}
spec:
  inputs: [{name: items, type: array}]
  steps:
    - id: fan
      map: {items: "inputs.items", maxParallel: 20, step: {id: one, run: {uses: "builtin:echo", with: {i: "{{ item }}"}}}}
    - {id: after, run: {uses: "builtin:echo", with: {n: "{{ length(steps.fan.outputs.results) }}"}}}
"""
LEVELS_HELD = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: levels, version: 1.0.0}
spec:
  inputs: [{name: items, type: array}]
  steps:
    - id: fan
      map:
        items: "inputs.items"
        maxParallel: 1
        step:
          id: pick
          conditional:
            branches:
              - condition: "item == `7`"
                steps: [{id: quiet, run: {uses: "builtin:noop"}, when: "{{ `false` }}"}]
              - condition: "item == `13`"
                steps: [{id: bad, run: {uses: "builtin:fail", with: {message: "item 13 is bad"}}}]
            else: [{id: ok, run: {uses: "builtin:noop"}}]
"""
LEVELS_CONSTANTS = {"MAP_INLINE_LIMIT": 4, "MAP_CHUNK_SIZE": 5, "MAP_CHILDREN_PER_WORKFLOW": 3}
"""Small sizes, so 100 items fan out in three levels below the run; the replay test sets the
same ones (history_constants.json) before it replays these histories."""


async def map_levels_held(client: Client, tq: str) -> None:
    """A map in levels whose items are held as a status each (the map-items-held patch); item
    13 fails, so later items are skipped by range."""
    await map_levels(client, tq, held=True)


async def map_levels(client: Client, tq: str, *, held: bool = False) -> None:
    # A map of more chunks than a workflow may start (the map-fan-out-in-levels patch): the run
    # starts groups, the first group starts smaller groups, those start the chunks.
    with shrunk(LEVELS_CONSTANTS):
        items = {"items": list(range(100))}
        if held:
            handle = await start_pack(client, tq, LEVELS_HELD, items, run_id="map-levels-held")
            result = await result_of(handle)
            assert result.status == "failed", result
            records = {"map-levels-held": handle}
        else:
            handle = await start_pack(client, tq, LEVELS, items, run_id="map-levels")
            result = await handle.result()
            group = f"{handle.id}/fan/chunks-0-8"
            records = {
                "map-levels": handle,
                "map-levels-group": client.get_workflow_handle(group),
                "map-levels-subgroup": client.get_workflow_handle(f"{group}/chunks-0-2"),
            }
            assert result.status == "succeeded", result
    await _save_with_sizes({name: (handle, LEVELS_CONSTANTS) for name, handle in records.items()})


async def _save_with_sizes(
    records: dict[str, tuple[WorkflowHandle[Any, Any], dict[str, int]]],
) -> None:
    """Save histories recorded under shrunk sizes, and the sizes beside them for the replay."""
    constants = json.loads(CONSTANTS.read_text()) if CONSTANTS.exists() else {}
    for name, (recorded, sizes) in records.items():
        await _save(name, recorded)
        constants[name] = sizes
    CONSTANTS.write_text(json.dumps(constants, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def shrunk(sizes: dict[str, int]) -> Iterator[None]:
    """compiler.history's sizes set to `sizes` while recording (the workflow code reads them)."""
    from compiler import history

    saved = {key: getattr(history, key) for key in sizes}
    for key, value in sizes.items():
        setattr(history, key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            setattr(history, key, value)


RANGE = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: map-range, version: 1.0.0}
spec:
  steps:
    - id: fan
      map:
        items: {range: {start: 100, end: 0, step: -3}}
        maxParallel: 10
        step: {id: one, run: {uses: "builtin:echo", with: {n: "{{ item }}"}}}
    - {id: tail, run: {uses: "builtin:echo", with: {n: "{{ length(steps.fan.outputs.results) }}"}}}
"""
RANGE_CONSTANTS = {"MAP_INLINE_LIMIT": 4, "MAP_CHUNK_SIZE": 5}
"""34 items in 7 chunks the run starts itself, or (3 children per workflow) through groups."""


async def map_range(client: Client, tq: str) -> None:
    # A map of a range (the map-items-range patch): nothing stored, each chunk computes its
    # slice; started by the run itself and, with 3 children per workflow, through groups.

    records: dict[str, tuple[WorkflowHandle[Any, Any], dict[str, int]]] = {}
    for width, name in ((100, "map-range"), (3, "map-range-levels")):
        sizes = {**RANGE_CONSTANTS, "MAP_CHILDREN_PER_WORKFLOW": width}
        with shrunk(sizes):
            handle = await start_pack(client, tq, RANGE, run_id=name)
            result = await handle.result()
            assert result.status == "succeeded", result
        records[name] = (handle, sizes)
        chunk = "fan/chunk-6" if width == 100 else "fan/chunks-6-6/chunk-6"
        records[f"{name}-chunk"] = (client.get_workflow_handle(f"{handle.id}/{chunk}"), sizes)
    await _save_with_sizes(records)


PATCHES_FIRST = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: patches-first, version: 1.0.0}
spec:
  inputs: [{name: items, type: array}]
  steps:
    - {id: first, run: {uses: "builtin:echo", with: {n: 1}}}
    - {id: second, run: {uses: "builtin:echo", with: {n: 2}}}
    - id: fan
      map: {items: "inputs.items", step: {id: one, run: {uses: "builtin:echo", with: {i: "{{ item }}"}}}}
    - {id: after, run: {uses: "builtin:echo", with: {n: "{{ length(steps.fan.outputs.results) }}"}}}
"""
"""Two log pages (logsKeptInRun 2) between steps, then 20 items in 4 chunks through groups (under
LEVELS_CONSTANTS): three kinds of local activity, each after every patch is decided."""


async def patches_first(client: Client, tq: str) -> None:
    # Every patch decided before a local activity (the patches-decided-before-local-activities
    # patch): no code after one asks for a patch a full replay would not know of yet.
    with shrunk(LEVELS_CONSTANTS):
        handle = await start_pack(
            client,
            tq,
            PATCHES_FIRST,
            {"items": list(range(20))},
            run_id="patches-first",
            logsKeptInRun=2,
        )
        result = await handle.result()
        assert result.status == "succeeded", result
    query = f"WorkflowId STARTS_WITH '{handle.id}/' AND WorkflowType = 'PackRunMapChunk'"
    (chunk,) = [w.id async for w in client.list_workflows(query) if w.id.endswith("/chunk-0")]
    await _save_with_sizes(
        {
            "patches-first": (handle, LEVELS_CONSTANTS),
            "patches-first-chunk": (client.get_workflow_handle(chunk), LEVELS_CONSTANTS),
        }
    )


async def paged_iterations(client: Client, tq: str) -> None:
    # Finished iterations paged out before continuing as new (the page-iterations-out patch).
    handle = await start_pack(
        client, tq, PAGED, run_id="paged-iterations", continueAsNewAfterEvents=150
    )
    result = await client.get_workflow_handle(handle.id, result_type=RunResult).result()
    assert result.status == "succeeded", result
    runs = [e.run_id async for e in client.list_workflows(f"WorkflowId = '{handle.id}'")]
    following = {}
    paging = []
    for run in runs:
        other = client.get_workflow_handle(handle.id, run_id=run)
        events = (await other.fetch_history()).events
        started = events[0].workflow_execution_started_event_attributes
        following[started.continued_execution_run_id] = other
        (given,) = await client.data_converter.decode(started.input.payloads, [PackRunInput])
        if not events[-1].HasField("workflow_execution_continued_as_new_event_attributes"):
            continue
        moved = events[-1].workflow_execution_continued_as_new_event_attributes
        (handed,) = await client.data_converter.decode(moved.input.payloads, [PackRunInput])
        before = len(given.carried.stepSegments) if given.carried else 0
        if len(handed.carried.stepSegments) > before:
            paging.append((run, other))
    assert paging, "no history paged iterations out"
    run, first = paging[0]
    await _save("paged-iterations", first)
    await _save("paged-iterations-next", following[run])


LEVELS_SLEEPY = LEVELS.replace(
    '{id: one, run: {uses: "builtin:echo", with: {i: "{{ item }}"}}}',
    '{id: nap, run: {uses: "builtin:sleep", with: {seconds: 120}}}',
)


LOCAL_ACTIVITY = "local-activity"
"""How `markers` names a local activity's marker."""


def markers(events: Sequence[Any]) -> list[str]:
    """The history's markers in order: a patch's id, or LOCAL_ACTIVITY."""
    found = []
    for event in events:
        if event.event_type != EventType.EVENT_TYPE_MARKER_RECORDED:
            continue
        attributes = event.marker_recorded_event_attributes
        if attributes.marker_name == "core_patch":
            data = attributes.details["patch-data"].payloads[0].data
            found.append(json.loads(data)["id"])
        elif attributes.marker_name == "core_local_activity":
            found.append(LOCAL_ACTIVITY)
    return found


def split_around_local_activity(history: WorkflowHistory) -> bool:
    """Whether a local activity's marker ends its workflow task and the commands after it came
    in the next one (core does so when the workflow left the worker's cache meanwhile)."""
    events = history.events
    for event, after in itertools.pairwise(events):
        attributes = event.marker_recorded_event_attributes
        if (
            event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
            and attributes.marker_name == "core_local_activity"
            and after.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED
        ):
            return True
    return False


async def _split_run(
    client: Client,
    manifest: str,
    name: str,
    finish: Callable[[WorkflowHandle[Any, Any]], Awaitable[None]],
) -> None:
    """Run `manifest` on 100 items, under LEVELS_CONSTANTS' sizes, on a worker that caches no workflow, asking for its state as it starts, until core splits its
    history around the map's local activity (the activity in one task, the code after it in the
    next); `finish` takes the run to its end. Save that history as `name`."""
    own = unique("tq")
    with shrunk(LEVELS_CONSTANTS):
        async with worker_for(client, Path(tempfile.mkdtemp()), own, max_cached_workflows=0):
            for attempt in range(10):
                handle = await start_pack(
                    client, own, manifest, {"items": list(range(100))}, run_id=f"{name}-{attempt}"
                )
                # Asked for its state as it starts (each query replays the whole history here).
                await keep_asking(handle, 0.5)
                await finish(handle)
                if split_around_local_activity(await handle.fetch_history()):
                    await _save_with_sizes({name: (handle, LEVELS_CONSTANTS)})
                    return
    raise SystemExit(f"{name}: core did not split a history around its local activity")


async def map_levels_cancelled_split(client: Client, tq: str) -> None:
    # A map in levels cancelled mid-way, on a worker that caches no workflow: every task replays
    # the whole history, and core wrote the items' local activity in one task and the code after
    # it in the next (the patches-decided-before-local-activities patch keeps that replayable;
    # before it, the run failed every task after the cancel with TMPRL1100 and stayed Running).
    async def cancel(handle: WorkflowHandle[Any, Any]) -> None:
        query = f"WorkflowId STARTS_WITH '{handle.id}/' AND WorkflowType = 'PackRunMapChunk'"
        while (await client.count_workflows(query)).count < 4:
            await asyncio.sleep(0.5)
        signal = CancelSignal(actorId="ops", reason="enough", temporalCancelFollows=True)
        await handle.signal(SIGNAL_CANCEL, signal)
        await handle.cancel(reason="enough")
        with contextlib.suppress(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), timeout=120)
        assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED

    await _split_run(client, LEVELS_SLEEPY, "map-levels-cancelled-split", cancel)


BESIDE = 45
MAP_BESIDE_STEPS = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: map-beside-steps, version: 1.0.0}
spec:
  inputs: [{name: items, type: array}]
  steps:
    - id: block
      parallel:
        maxParallel: 60
        steps:
          - id: fan
            map: {items: "inputs.items", step: {id: one, run: {uses: "builtin:echo", with: {i: "{{ item }}"}}}}
""" + "".join(
    f'          - {{id: s{n}, run: {{uses: "builtin:echo", with: {{n: {n}}}}}}}\n'
    for n in range(BESIDE)
)
"""A map whose items are stored (a local activity) in the task that starts 45 steps beside it."""


async def map_beside_steps_split(client: Client, tq: str) -> None:
    # The same split, where the code after the local activity starts the map's groups: replayed
    # in the first task, whose start budget the 45 steps beside the map nearly spent, they start
    # as they first did only because the budget counts afresh after a local activity.
    async def succeed(handle: WorkflowHandle[Any, Any]) -> None:
        result = await asyncio.wait_for(result_of(handle), timeout=120)
        assert result.status == "succeeded", result

    await _split_run(client, MAP_BESIDE_STEPS, "map-beside-steps-split", succeed)


RECORDERS = {
    "representative": representative,
    "chunked-map": chunked_map,
    "wide-map": wide_map,
    "nested-paging": nested_paging,
    "continue-as-new": continue_as_new,
    "cancelled": cancelled,
    "failed": failed,
    "cancelled-closed-canceled": cancelled_closed_canceled,
    "cancelled-state-in-memo": cancelled_state_in_memo,
    "continue-inside-loop": continue_inside_loop,
    "map-levels": map_levels,
    "map-levels-held": map_levels_held,
    "paged-iterations": paged_iterations,
    "map-range": map_range,
    "patches-first": patches_first,
    "map-levels-cancelled-split": map_levels_cancelled_split,
    "map-beside-steps-split": map_beside_steps_split,
}


async def record(names: list[str]) -> None:
    scripts = Path(sysconfig.get_path("scripts"))
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(scripts / "temporal"),
        search_attributes=SEARCH_ATTRIBUTES,
    )
    try:
        tq = unique("tq")
        async with worker_for(env.client, Path(tempfile.mkdtemp()), tq):
            for name in names:
                await RECORDERS[name](env.client, tq)
    finally:
        await env.shutdown()


if __name__ == "__main__":
    chosen = sys.argv[1:]
    if not chosen or any(name not in RECORDERS for name in chosen):
        sys.exit(f"usage: python -m tests.workflows.record_history {{{','.join(RECORDERS)}}}...")
    asyncio.run(record(chosen))
