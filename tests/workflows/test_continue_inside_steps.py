"""A run continues as new at boundaries inside a loop or a conditional, not only between top-level
steps: the next history walks the plan again, passes the steps that already ended with what they
recorded, resumes a loop at its first unfinished iteration and a conditional in the branch it
took. No step runs twice (the shell steps' trail counts them), and what a reader sees (steps,
outputs, the log in order) is what an uninterrupted run shows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from api.gateway import RunGateway
from api.metrics import Metrics
from api.settings import ApiSettings
from compiler import compile_manifest
from tests.faults.support import trail
from tests.helpers import (
    result_of,
    start_pack,
    state_of,
    steps_by_id,
    unique,
    whole_log,
    worker_for,
)
from workflows.contract.log_chain import chain_head
from workflows.contract.names import QUERY_STATE
from workflows.contract.state import (
    CarriedState,
    PackRunInput,
    RunMeta,
    RunStateSnapshot,
    StateQuery,
)
from workflows.interpreter import _aggregate as aggregate
from workflows.pack_run import CARRY_LIMIT_BYTES
from workflows.run_book import PAGE_MIN_STEPS, RunBook

ITERATIONS = 24
KINDS = ["even" if i % 2 == 0 else "odd" for i in range(ITERATIONS)]

LOOP = f"""
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {{name: long-loop, version: 1.0.0}}
spec:
  steps:
    - {{id: first, run: {{uses: "builtin:echo", with: {{n: 7}}}}}}
    - id: each
      loop:
        items: {{static: {KINDS}}}
        iterator: kind
        index: i
        steps:
          - {{id: mark, run: {{uses: "builtin:shell", with: {{command: "echo m{{{{ i }}}} >> trail.txt"}}}}}}
          - id: route
            conditional:
              outputUnion: true
              branches:
                - condition: "{{{{ kind == 'even' }}}}"
                  steps:
                    - {{id: e1, run: {{uses: "builtin:shell", with: {{command: "echo e{{{{ i }}}} >> trail.txt"}}}}}}
                    - {{id: e2, run: {{uses: "builtin:echo", with: {{half: "{{{{ i }}}}"}}}}}}
              else:
                - {{id: o1, run: {{uses: "builtin:shell", with: {{command: "echo o{{{{ i }}}} >> trail.txt"}}}}}}
          - id: out
            run:
              uses: builtin:echo
              with: {{i: "{{{{ i }}}}", first: "{{{{ steps.first.outputs.n }}}}", branch: "{{{{ steps.route.outputs.branch }}}}"}}
    - {{id: tail, run: {{uses: "builtin:echo", with: {{seen: "{{{{ steps.each.outputs.results[*].i }}}}"}}}}}}
"""

BRANCH_STEPS = 12
CONDITIONAL = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: long-branch, version: 1.0.0}
spec:
  inputs: [{name: env, type: string, default: prod}]
  steps:
    - id: route
      conditional:
        outputUnion: true
        branches:
          - condition: "{{ inputs.env == 'prod' }}"
            steps:
BODY
        else:
          - {id: never, run: {uses: "builtin:shell", with: {command: "echo never >> trail.txt"}}}
    - {id: tail, run: {uses: "builtin:echo", with: {last: "{{ steps.s11.outputs.s }}"}}}
""".replace(
    "BODY",
    "\n".join(
        f'              - {{id: s{i}, run: {{uses: "builtin:shell", '
        f'with: {{command: "echo s{i} >> trail.txt"}}}}}}'
        for i in range(BRANCH_STEPS - 1)
    )
    + f'\n              - {{id: s{BRANCH_STEPS - 1}, run: {{uses: "builtin:echo", with: {{s: 11}}}}}}',
)


async def carried_states(client: Client, handle: WorkflowHandle[Any, Any]) -> list[CarriedState]:
    """What each history after the first was handed, oldest first."""
    carried = []
    async for execution in client.list_workflows(f"WorkflowId = '{handle.id}'"):
        history = await client.get_workflow_handle(
            handle.id, run_id=execution.run_id
        ).fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        (run_input,) = await client.data_converter.decode(started.input.payloads, [PackRunInput])
        if run_input.carried is not None:
            carried.append(run_input.carried)
    return sorted(carried, key=lambda c: c.updatedAt)


class TestContinueAsNewInsideALoop:
    async def test_a_long_loop_continues_as_new_inside_and_runs_every_step_once(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        client = dev_env.client
        tq = unique("tq")
        async with worker_for(client, tmp_path, tq):
            handle = await start_pack(client, tq, LOOP, continueAsNewAfterEvents=60)
            result = await result_of(handle)
            assert result.status == "succeeded", result.error
            latest = client.get_workflow_handle(handle.id)
            state = await state_of(latest)
            run_id = handle.id.split("/")[-1]
            entries = await whole_log(client, tmp_path, run_id)
            carried = await carried_states(client, handle)

        # It continued as new several times, and inside the loop, not only around it.
        inside = [c for c in carried if "each" in c.progress]
        assert len(inside) >= 3, [sorted(c.progress) for c in carried]
        # Where it stood: the loop's next iteration moved on from one history to the next.
        nexts = [c.progress["each"].nextIteration for c in inside]
        assert nexts == sorted(nexts) and nexts[-1] > nexts[0], nexts

        # Every shell step ran exactly once, in order, across every history.
        expected = []
        for i, kind in enumerate(KINDS):
            expected += [f"m{i}", f"e{i}" if kind == "even" else f"o{i}"]
        assert trail(tmp_path, "default", run_id) == expected

        # The state shows every iteration, as an uninterrupted run would.
        steps = steps_by_id(state)
        for i, kind in enumerate(KINDS):
            taken, other = (("e1", "e2"), ("o1",)) if kind == "even" else (("o1",), ("e1", "e2"))
            for body in ("mark", "route", "out", *taken):
                assert steps[f"each[{i}]::{body}"].status == "Succeeded", (i, body)
                assert steps[f"each[{i}]::{body}"].attempts <= 1
            for body in other:
                assert steps[f"each[{i}]::{body}"].status == "Skipped"
                assert steps[f"each[{i}]::{body}"].statusReason == "branch-not-taken"
            assert steps[f"each[{i}]::route"].outputs["branch"] == (0 if kind == "even" else "else")
        assert steps["each"].status == "Succeeded"
        results = steps["each"].outputs["results"]
        assert results == [
            {"i": i, "first": 7, "branch": 0 if kind == "even" else "else"}
            for i, kind in enumerate(KINDS)
        ]
        assert steps["tail"].outputs == {"seen": list(range(ITERATIONS))}
        assert state.totalSteps == len(state.steps) == 3 + ITERATIONS * 6

        # The log: whole, gap-free, chained, one start and one end per step, one branch decision
        # per iteration, and one `run.continued` per history after the first.
        assert [e.sequence for e in entries] == list(range(1, len(entries) + 1))
        chain_head(e.model_dump(mode="json") for e in entries)
        started = [e.stepId for e in entries if e.eventType == "step.started"]
        completed = [e.stepId for e in entries if e.eventType == "step.completed"]
        assert len(started) == len(set(started)) and len(completed) == len(set(completed))
        assert sorted(completed) == sorted(s.stepId for s in state.steps if s.status == "Succeeded")
        assert sum(e.eventType == "step.branch" for e in entries) == ITERATIONS
        assert sum(e.eventType == "run.continued" for e in entries) == len(carried)


class TestContinueAsNewInsideAConditional:
    async def test_the_branch_taken_stands_and_its_steps_run_once(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        client = dev_env.client
        tq = unique("tq")
        async with worker_for(client, tmp_path, tq):
            handle = await start_pack(client, tq, CONDITIONAL, continueAsNewAfterEvents=30)
            result = await result_of(handle)
            assert result.status == "succeeded", result.error
            state = await state_of(client.get_workflow_handle(handle.id))
            run_id = handle.id.split("/")[-1]
            entries = await whole_log(client, tmp_path, run_id)
            carried = await carried_states(client, handle)

        inside = [c for c in carried if "route" in c.progress]
        assert len(inside) >= 2, [sorted(c.progress) for c in carried]
        assert all(c.progress["route"].branch == 0 for c in inside)
        assert trail(tmp_path, "default", run_id) == [f"s{i}" for i in range(BRANCH_STEPS - 1)]
        steps = steps_by_id(state)
        assert steps["never"].status == "Skipped"
        assert steps["never"].statusReason == "branch-not-taken"
        # The union of the taken branch's outputs, with the branch that was taken.
        assert steps["route"].outputs["s"] == 11 and steps["route"].outputs["branch"] == 0
        assert steps["tail"].outputs == {"last": 11}
        assert [e.eventType for e in entries].count("step.branch") == 1
        assert [e.sequence for e in entries] == list(range(1, len(entries) + 1))


PARALLEL = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: side-by-side, version: 1.0.0}
spec:
  steps:
    - id: both
      parallel:
        steps:
          - id: left
            loop:
              items: {range: {start: 0, end: 10, step: 1}}
              steps: [{id: l, run: {uses: "builtin:shell", with: {command: "echo l{{ index }} >> trail.txt"}}}]
          - id: right
            loop:
              items: {range: {start: 0, end: 10, step: 1}}
              steps: [{id: r, run: {uses: "builtin:noop"}}]
    - {id: tail, run: {uses: "builtin:noop"}}
"""


class TestNoContinueAsNewBesideOtherSteps:
    async def test_loops_side_by_side_wait_for_the_next_top_level_boundary(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        """Where the steps running beside a boundary stand cannot be carried: inside a parallel
        block the run goes on in its history, and continues as new after it."""
        client = dev_env.client
        tq = unique("tq")
        async with worker_for(client, tmp_path, tq):
            handle = await start_pack(client, tq, PARALLEL, continueAsNewAfterEvents=30)
            result = await result_of(handle)
            assert result.status == "succeeded", result.error
            run_id = handle.id.split("/")[-1]
            carried = await carried_states(client, handle)
        assert len(carried) == 1 and carried[0].progress == {}
        assert carried[0].nextStepIndex == 1
        assert trail(tmp_path, "default", run_id) == [f"l{i}" for i in range(10)]


def gateway(client: Client, data_dir: Path) -> RunGateway:
    settings = ApiSettings(
        temporal_address=client.service_client.config.target_host, data_dir=data_dir
    )
    return RunGateway(client, settings, Metrics())


LONG = 150
LONG_LOOP = f"""
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {{name: longer-loop, version: 1.0.0}}
spec:
  steps:
    - {{id: first, run: {{uses: "builtin:noop"}}}}
    - id: each
      loop:
        items: {{range: {{start: 0, end: {LONG}, step: 1}}}}
        aggregation: merge
        steps:
          - {{id: a, run: {{uses: "builtin:echo", with: {{i: "{{{{ item }}}}"}}}}}}
          - {{id: b, run: {{uses: "builtin:echo", with: {{last: "{{{{ steps.a.outputs.i }}}}"}}}}}}
    - {{id: tail, run: {{uses: "builtin:echo", with: {{last: "{{{{ steps.each.outputs.last }}}}"}}}}}}
"""


class TestLongLoopCarriesBoundedState:
    async def test_finished_iterations_are_paged_out_and_read_back_in_place(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        """The carried state holds neither the finished iterations (paged out to the artifact
        store once they hold PAGE_MIN_STEPS states) nor those not begun (registered again from
        the plan): it stays bounded however long the loop. Read through the API, the run shows
        every iteration's steps in order, with their outputs, as if nothing had moved."""
        client = dev_env.client
        tq = unique("tq")
        async with worker_for(client, tmp_path, tq):
            handle = await start_pack(client, tq, LONG_LOOP, continueAsNewAfterEvents=150)
            result = await result_of(handle)
            assert result.status == "succeeded", result.error
            run_id = handle.id.split("/")[-1]
            api = gateway(client, tmp_path)
            full = await api.state_with_outputs("default", run_id)
            window = (await api.state("default", run_id, steps_offset=190, steps_limit=30)).snapshot
            carried = await carried_states(client, handle)

        assert len(carried) >= 4, len(carried)
        assert any(c.stepSegments for c in carried), "nothing was paged out"
        # Bounded: the top-level steps, the unpaged finished iterations (under PAGE_MIN_STEPS
        # states) and the one under way; never the 2 x 150 iteration states registered.
        sizes = [len(c.steps) for c in carried]
        assert max(sizes) < PAGE_MIN_STEPS + 10, sizes

        expected = ["first", "each"]
        for i in range(LONG):
            expected += [f"each[{i}]::a", f"each[{i}]::b"]
        expected.append("tail")
        assert [s.stepId for s in full.steps] == expected
        assert full.totalSteps == len(expected)
        assert all(s.status == "Succeeded" for s in full.steps)
        assert all(s.attempts == 1 for s in full.steps if s.kind == "Run")
        steps = steps_by_id(full)
        assert all(steps[f"each[{i}]::a"].outputs == {"i": i} for i in range(LONG))
        assert steps["each"].outputs == {"last": LONG - 1}
        assert steps["tail"].outputs == {"last": LONG - 1}
        # A page across a paged-out segment's edge is the same slice, outputs left out.
        assert [s.stepId for s in window.steps] == expected[190:220]
        assert all(s.outputs == {} for s in window.steps)
        assert window.pagedSteps == []


NESTED_LOOPS = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: loops-in-loops, version: 1.0.0}
spec:
  steps:
    - id: outer
      loop:
        items: {range: {start: 0, end: 2, step: 1}}
        iterator: o
        steps:
          - id: inner
            loop:
              items: {range: {start: 0, end: 260, step: 1}}
              steps: [{id: x, run: {uses: "builtin:echo", with: {o: "{{ o }}", i: "{{ item }}"}}}]
    - {id: tail, run: {uses: "builtin:noop"}}
"""


class TestNestedLongLoops:
    async def test_an_outer_iteration_takes_in_its_inner_loops_pages(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        """An inner loop's iterations paged out while it ran go out again inside its outer
        iteration's page; read back, every step is where it was."""
        client = dev_env.client
        tq = unique("tq")
        async with worker_for(client, tmp_path, tq):
            handle = await start_pack(client, tq, NESTED_LOOPS, continueAsNewAfterEvents=200)
            result = await result_of(handle)
            assert result.status == "succeeded", result.error
            run_id = handle.id.split("/")[-1]
            full = await gateway(client, tmp_path).state_with_outputs("default", run_id)
            carried = await carried_states(client, handle)

        expected = ["outer"]
        for o in range(2):
            expected += [f"outer[{o}]::inner"]
            expected += [f"outer[{o}]::inner[{i}]::x" for i in range(260)]
        expected.append("tail")
        assert [s.stepId for s in full.steps] == expected
        assert all(s.status == "Succeeded" for s in full.steps)
        steps = steps_by_id(full)
        assert steps["outer[1]::inner[259]::x"].outputs == {"o": 1, "i": 259}
        assert steps["outer[0]::inner[3]::x"].outputs == {"o": 0, "i": 3}
        loops = {segment.loopId for c in carried for segment in c.stepSegments}
        assert "outer[0]::inner" in loops and "outer" in loops, loops
        assert max(len(c.steps) for c in carried) < PAGE_MIN_STEPS + 10


@pytest.mark.parametrize("mode", ["collect", "merge", "first", "last", "none"])
def test_a_loop_carries_only_what_its_aggregation_needs(mode: str) -> None:
    """Across continue-as-new a loop hands on its finished iterations' outputs reduced to what
    its aggregation needs (one merged object, the first, the last; every one for `collect`),
    and the loop's outputs come out as if it had kept them all."""
    compiled = compile_manifest(LONG_LOOP)
    meta = RunMeta(runId="r", tenant="t", requestedAt="2026-01-01T00:00:00Z")
    book = RunBook(
        compiled.plan, compiled.plan_hash, meta, lambda: datetime(2026, 1, 1, tzinfo=UTC)
    )
    outputs = [{"i": i, f"k{i % 3}": i} for i in range(7)]
    book.begin_loop("each", len(outputs))
    for index, output in enumerate(outputs):
        book.iteration_done("each", index, output, True, mode)
    carried = CarriedState.model_validate_json(book.carry().model_dump_json())
    kept = carried.progress["each"].outputs
    assert aggregate(mode, kept) == aggregate(mode, outputs)
    assert len(kept) == (len(outputs) if mode == "collect" else 0 if mode == "none" else 1)


PAD = "x" * 60_000
HEAVY = f"""
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {{name: heavy-loop, version: 1.0.0}}
spec:
  steps:
    - id: each
      loop:
        items: {{range: {{end: 36}}}}
        steps:
          - {{id: big, run: {{uses: "builtin:echo", with: {{i: "{{{{ item }}}}", pad: "{PAD}"}}}}}}
    - {{id: tail, run: {{uses: "builtin:echo", with: {{is: "{{{{ steps.each.outputs.results[*].i }}}}"}}}}}}
"""


class TestTooLargeToCarryInsideALoop:
    async def test_the_run_goes_on_in_its_history_and_says_so_once(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        """A `collect` loop's results ride in the carried state: past 1.5 MB the run stops
        continuing as new, warns once, and finishes in its history (trying again only after
        CARRY_RETRY_EVENTS more events, not at every boundary)."""
        client = dev_env.client
        tq = unique("tq")
        async with worker_for(client, tmp_path, tq):
            handle = await start_pack(client, tq, HEAVY, continueAsNewAfterEvents=30)
            result = await result_of(handle)
            assert result.status == "succeeded", result.error
            run_id = handle.id.split("/")[-1]
            entries = await whole_log(client, tmp_path, run_id)
            carried = await carried_states(client, handle)
            # Only the last step's outputs: the loop's results are megabytes, past a query's 4 MB.
            tail = await client.get_workflow_handle(handle.id).query(
                QUERY_STATE,
                StateQuery(includeOutputs=True, stepsOffset=1 + 36, stepsLimit=1),
                result_type=RunStateSnapshot,
            )

        skipped = [e for e in entries if e.eventType == "run.continue-as-new-skipped"]
        assert len(skipped) == 1, skipped
        continued = [e.sequence for e in entries if e.eventType == "run.continued"]
        assert carried and continued and max(continued) < skipped[0].sequence
        assert max(len(c.model_dump_json()) for c in carried) < CARRY_LIMIT_BYTES
        assert [(s.stepId, s.outputs) for s in tail.steps] == [("tail", {"is": list(range(36))})]
        completed = [e.stepId for e in entries if e.eventType == "step.completed"]
        assert len(completed) == len(set(completed)) == 36 + 2


MIXED = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: mixed-loop, version: 1.0.0}
spec:
  steps:
    - {id: first, run: {uses: "builtin:echo", with: {n: 3}}}
    - id: each
      continueOnError: true
      loop:
        items: {range: {end: 12}}
        continueOnError: true
        aggregation: merge
        steps:
          - {id: a, run: {uses: "builtin:echo", with: {i: "{{ item }}"}}}
          - id: pick
            conditional:
              branches:
                - condition: "{{ item == `4` }}"
                  steps: [{id: broken, run: {uses: "builtin:fail", with: {message: "four"}}}]
                - condition: "{{ item > `6` }}"
                  steps:
                    - {id: late, run: {uses: "builtin:echo", with: {late: "{{ item }}"}}}
                    - {id: maybe, when: "{{ item == `9` }}", run: {uses: "builtin:noop"}}
              else: [{id: early, run: {uses: "builtin:echo", with: {early: "{{ item }}"}}}]
          - {id: z, run: {uses: "builtin:echo", with: {z: "{{ steps.a.outputs.i }}"}}}
    - {id: tail, run: {uses: "builtin:echo", with: {seen: "{{ steps.each.outputs }}"}}}
"""


def what_a_reader_sees(state: Any, entries: list[Any]) -> tuple[Any, Any]:
    """Steps and log, less what differs between any two runs (times, durations) and the
    `run.continued` entries that say where a history began."""
    steps = [
        (s.stepId, s.kind, s.status, s.statusReason, s.attempts, s.enabled, s.outputs)
        for s in state.steps
    ]
    log = [
        (e.eventType, e.stepId, e.level, e.message)
        for e in entries
        if e.eventType != "run.continued"
    ]
    return steps, log


class TestSameAsAnUninterruptedRun:
    async def test_a_run_that_continued_as_new_inside_shows_what_one_that_did_not_shows(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        """The same pack (a failing iteration under continueOnError, branches, a `when`, a merge
        aggregation) run in one history and continued as new every few steps: a reader sees the
        same steps, outputs and log, entry for entry."""
        client = dev_env.client
        tq = unique("tq")
        seen = []
        async with worker_for(client, tmp_path, tq):
            for every in (None, 25):
                handle = await start_pack(client, tq, MIXED, continueAsNewAfterEvents=every)
                result = await result_of(handle)
                run_id = handle.id.split("/")[-1]
                state = await gateway(client, tmp_path).state_with_outputs("default", run_id)
                entries = await whole_log(client, tmp_path, run_id)
                carried = await carried_states(client, handle)
                seen.append((result.status, result.error, *what_a_reader_sees(state, entries)))
                if every is not None:
                    assert sum(1 for c in carried if "each" in c.progress) >= 3, len(carried)
                else:
                    assert carried == []
        assert seen[0] == seen[1]
        _, _, steps, _ = seen[0]
        by_id = {s[0]: s for s in steps}
        assert by_id["each[4]::broken"][2] == "Failed" and by_id["each"][2] == "Failed"
        assert by_id["each[9]::maybe"][2] == "Succeeded"
        assert by_id["each[8]::maybe"][3] == "condition-false"
