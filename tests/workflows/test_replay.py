"""Determinism: a committed history of a representative run replays on today's workflow code."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.workflows.record_history import (
    LOCAL_ACTIVITY,
    markers,
    shrunk,
    split_around_local_activity,
)
from workflows.contract.state import CarriedState, PackRunInput
from workflows.worker import WORKFLOWS

HISTORIES = Path(__file__).parent / "histories"
WORKFLOW_IDS = json.loads((Path(__file__).parent / "history_workflow_ids.json").read_text())


CONSTANTS = json.loads((Path(__file__).parent / "history_constants.json").read_text())


def workflow_id(name: str) -> str:
    """The id the recorded workflow ran under (a chunk's child ids are built from it)."""
    return str(WORKFLOW_IDS.get(name, name))


@contextlib.contextmanager
def recorded_sizes(name: str) -> Iterator[None]:
    """compiler.history's sizes as they were when `name` was recorded (small ones, so a map
    fans out in levels with 100 items); the workflow code reads them when it runs."""
    with shrunk(CONSTANTS.get(name, {})):
        yield


async def test_recorded_histories_replay() -> None:
    files = sorted(HISTORIES.glob("*.json"))
    assert files, "no recorded histories: run python -m tests.workflows.record_history"
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=pydantic_data_converter)
    for path in files:
        history = WorkflowHistory.from_json(workflow_id(path.stem), path.read_text())
        with recorded_sizes(path.stem):
            result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"


async def test_recorded_histories_replay_on_a_traced_worker() -> None:
    """A worker with OpenTelemetry on (Temporal's TracingInterceptor, workflows/contract/
    telemetry.py) replays the same histories: tracing adds headers, never commands, and makes
    no spans while replaying."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from workflows.contract import telemetry

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    replayer = Replayer(
        workflows=list(WORKFLOWS),
        data_converter=pydantic_data_converter,
        interceptors=telemetry.interceptors(provider),
    )
    for path in sorted(HISTORIES.glob("*.json")):
        history = WorkflowHistory.from_json(workflow_id(path.stem), path.read_text())
        with recorded_sizes(path.stem):
            result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
    assert spans.get_finished_spans() == ()


async def test_a_changed_workflow_is_caught(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The replay check has teeth: reordering what the workflow does is reported."""
    from workflows import interpreter

    original = interpreter.Interpreter._parallel

    async def reversed_parallel(self, step, frame, rid):  # type: ignore[no-untyped-def]
        step = step.model_copy(update={"steps": tuple(reversed(step.steps))})
        return await original(self, step, frame, rid)

    monkeypatch.setattr(interpreter.Interpreter, "_parallel", reversed_parallel)
    path = HISTORIES / "representative.json"
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(
        WorkflowHistory.from_json(path.stem, path.read_text()), raise_on_replay_failure=False
    )
    assert result.replay_failure is not None


def test_the_recorded_histories_cover_the_run_shapes() -> None:
    """Besides the representative run: a map that fanned out (the parent and its chunk), a run
    that continued as new (its first history, which carries, and its last), a cancelled run, a
    map whose starts were spread over workflow tasks, a loop whose log was paged out inside it,
    a cancelled run that left its final state in its memo."""
    shapes = {}
    for path in HISTORIES.glob("*.json"):
        events = WorkflowHistory.from_json(path.stem, path.read_text()).events
        started = events[0].workflow_execution_started_event_attributes
        shapes[path.stem] = (started.workflow_type.name, events[-1].event_type)
    assert shapes["representative"] == (
        "PackRun",
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
    )
    assert shapes["chunked-map"][0] == "PackRun"
    assert shapes["chunked-map-chunk"][0] == "PackRunMapChunk"
    # A map in levels: the run starts groups, a group starts groups, a group starts chunks.
    assert shapes["map-levels"][0] == "PackRun"
    assert shapes["map-levels-group"][0] == shapes["map-levels-subgroup"][0] == "PackRunMapGroup"
    assert shapes["map-levels-held"] == ("PackRun", EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED)
    assert "map-items-held" in patches_in("map-levels-held")
    assert "map-items-held" not in patches_in("map-levels")
    for name, child in (
        ("map-levels", "PackRunMapGroup"),
        ("map-levels-held", "PackRunMapGroup"),
        ("map-levels-group", "PackRunMapGroup"),
        ("map-levels-subgroup", "PackRunMapChunk"),
    ):
        events = WorkflowHistory.from_json(name, (HISTORIES / f"{name}.json").read_text()).events
        started = {
            e.start_child_workflow_execution_initiated_event_attributes.workflow_type.name
            for e in events
            if e.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED
        }
        assert started == {child}, name
    assert shapes["continue-as-new-first"] == (
        "PackRun",
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
    )
    assert shapes["continue-as-new-last"][0] == "PackRun"
    assert shapes["cancelled"][0] == "PackRun"
    wide = (HISTORIES / "wide-map.json").read_text()
    assert "EVENT_TYPE_TIMER_STARTED" in wide  # its starts were spread over workflow tasks
    nested = (HISTORIES / "nested-paging.json").read_text()
    assert nested.count("core_local_activity") >= 2  # pages written from inside the loop
    cancelled = (HISTORIES / "cancelled.json").read_text()
    assert "EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED" in cancelled  # cut off mid-step
    # Since the close-as-failed-or-canceled patch: a failed run closes Failed, one cancelled as
    # the API does it (the signal, then Temporal's request, which the run waited for) Canceled.
    assert shapes["failed"] == ("PackRun", EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED)
    assert shapes["cancelled-closed-canceled"] == (
        "PackRun",
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
    )
    assert shapes["cancelled"][1] == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED  # before it
    # Since the cancelled-state-in-memo patch: the run leaves its final state in its memo (a
    # Canceled workflow has no result) just before it closes.
    assert shapes["cancelled-state-in-memo"] == (
        "PackRun",
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
    )
    memo = WorkflowHistory.from_json("m", (HISTORIES / "cancelled-state-in-memo.json").read_text())
    assert events_before_close(memo)[-1] == EventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED
    older = WorkflowHistory.from_json(
        "c", (HISTORIES / "cancelled-closed-canceled.json").read_text()
    )
    assert EventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED not in events_before_close(older)
    # Since the continue-as-new-inside-steps patch: a run continues as new inside a loop (and a
    # conditional in it), handing on where they stand; the next history resumes there.
    for name in ("continue-inside-loop-first", "continue-inside-loop-resumed"):
        assert shapes[name] == ("PackRun", EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW)
        progress = carried_on(name).progress
        assert "each" in progress and any(k.startswith("each[") for k in progress), progress
    assert carried_on("continue-inside-loop-resumed").progress["each"].nextIteration > (
        carried_on("continue-inside-loop-first").progress["each"].nextIteration
    )
    # Since the page-iterations-out patch: a long loop's finished iterations are paged out before
    # the run continues as new; the next history is handed the segments, not the states.
    paged = carried_on("paged-iterations")
    assert paged.stepSegments and paged.stepSegments[0].loopId == "each"
    assert shapes["paged-iterations-next"][0] == "PackRun"
    # Since the map-items-range patch: a map of a range stores no items (no store, no load), and
    # its chunks compute their slices, whether the run or a group starts them.
    for name in ("map-range", "map-range-levels"):
        assert "map-items-range" in patches_in(name)
        assert "map-items-by-reference" not in patches_in(name)
        assert shapes[f"{name}-chunk"][0] == "PackRunMapChunk"
        chunk = (HISTORIES / f"{name}-chunk.json").read_text()
        assert "core_local_activity" not in chunk  # no local activity loaded its items


def carried_on(name: str) -> CarriedState:
    """The state a recorded history continued as new with."""
    history = WorkflowHistory.from_json(name, (HISTORIES / f"{name}.json").read_text())
    attributes = history.events[-1].workflow_execution_continued_as_new_event_attributes
    (payload,) = attributes.input.payloads
    carried = PackRunInput.model_validate_json(payload.data).carried
    assert carried is not None
    return carried


def patches_in(name: str) -> set[str]:
    """The patches a recorded history's markers name."""
    events = WorkflowHistory.from_json(name, (HISTORIES / f"{name}.json").read_text()).events
    return set(markers(events)) - {LOCAL_ACTIVITY}


def events_before_close(history: WorkflowHistory) -> list[EventType.ValueType]:
    return [e.event_type for e in history.events[:-1]]


async def test_the_state_left_in_the_memo_needs_its_patch(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Replayed as code before the cancelled-state-in-memo patch runs it, the run that left its
    state in its memo does not replay: the memo's upsert is a command of the patch's."""
    from temporalio import workflow

    from workflows.patches import PATCH_CANCELLED_STATE_IN_MEMO

    patched = workflow.patched
    monkeypatch.setattr(
        workflow, "patched", lambda id: id != PATCH_CANCELLED_STATE_IN_MEMO and patched(id)
    )
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=pydantic_data_converter)
    name = "cancelled-state-in-memo"
    history = WorkflowHistory.from_json(workflow_id(name), (HISTORIES / f"{name}.json").read_text())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is not None


async def test_the_failed_and_canceled_endings_need_their_patch(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Replayed without the close-as-failed-or-canceled patch (as older code runs), the runs that
    closed Failed and Canceled do not replay: the endings are the patch's, not the old code's."""
    from temporalio import workflow

    from workflows.patches import PATCH_CLOSE_AS_ENDED

    patched = workflow.patched
    # The workflow module itself is re-imported in the sandbox; temporalio is passed through.
    monkeypatch.setattr(workflow, "patched", lambda id: id != PATCH_CLOSE_AS_ENDED and patched(id))
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=pydantic_data_converter)
    for name in ("failed", "cancelled-closed-canceled"):
        path = HISTORIES / f"{name}.json"
        history = WorkflowHistory.from_json(workflow_id(name), path.read_text())
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is not None, name


async def test_continuing_as_new_inside_a_loop_needs_its_patch(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Replayed as code before the continue-as-new-inside-steps patch runs it, the run that
    continued as new inside its loop does not replay: it would have gone on in that history."""
    from temporalio import workflow

    from workflows.patches import PATCH_NESTED_CONTINUE_AS_NEW

    patched = workflow.patched
    monkeypatch.setattr(
        workflow, "patched", lambda id: id != PATCH_NESTED_CONTINUE_AS_NEW and patched(id)
    )
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=pydantic_data_converter)
    name = "continue-inside-loop-first"
    history = WorkflowHistory.from_json(workflow_id(name), (HISTORIES / f"{name}.json").read_text())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is not None


async def test_a_map_in_levels_needs_its_patch(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Replayed as code before the map-fan-out-in-levels patch runs it, the run whose map started
    groups does not replay: that code started every chunk itself. Nor does it replay with sizes
    under which its map would not fan out in levels: the sizes are part of what was recorded."""
    from temporalio import workflow

    from workflows.patches import PATCH_MAP_LEVELS

    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=pydantic_data_converter)
    name = "map-levels"
    history = WorkflowHistory.from_json(workflow_id(name), (HISTORIES / f"{name}.json").read_text())
    with recorded_sizes(name):
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None
    patched = workflow.patched
    monkeypatch.setattr(workflow, "patched", lambda id: id != PATCH_MAP_LEVELS and patched(id))
    with recorded_sizes(name):
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is not None


async def test_held_map_items_need_their_patch(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Replayed as code before the map-items-held patch runs it, the run whose map held its items
    as a status each does not replay (its patch marker is a command that code never sends)."""
    from temporalio import workflow

    from workflows.patches import PATCH_HELD_ITEMS

    patched = workflow.patched
    monkeypatch.setattr(workflow, "patched", lambda id: id != PATCH_HELD_ITEMS and patched(id))
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=pydantic_data_converter)
    name = "map-levels-held"
    history = WorkflowHistory.from_json(workflow_id(name), (HISTORIES / f"{name}.json").read_text())
    with recorded_sizes(name):
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is not None


async def test_paging_iterations_out_needs_its_patch(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Replayed as code before the page-iterations-out patch runs it, the run that paged its
    loop's finished iterations out does not replay: the page's local activity is the patch's."""
    from temporalio import workflow

    from workflows.patches import PATCH_PAGE_ITERATIONS

    patched = workflow.patched
    monkeypatch.setattr(workflow, "patched", lambda id: id != PATCH_PAGE_ITERATIONS and patched(id))
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=pydantic_data_converter)
    name = "paged-iterations"
    history = WorkflowHistory.from_json(workflow_id(name), (HISTORIES / f"{name}.json").read_text())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is not None


async def test_deciding_patches_before_local_activities_needs_its_patch(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Replayed as code before the patches-decided-before-local-activities patch runs it, the run
    and the chunk that decided every patch before their first local activity do not replay: that
    code asked for each patch where it was needed, after the activity."""
    from temporalio import workflow

    from workflows.patches import PATCH_DECIDED_FIRST

    patched = workflow.patched
    monkeypatch.setattr(workflow, "patched", lambda id: id != PATCH_DECIDED_FIRST and patched(id))
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=pydantic_data_converter)
    for name in ("patches-first", "patches-first-chunk"):
        history = WorkflowHistory.from_json(
            workflow_id(name), (HISTORIES / f"{name}.json").read_text()
        )
        with recorded_sizes(name):
            result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is not None, name


async def test_a_split_history_replays_only_with_the_start_budget_afresh(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The map beside 45 steps whose history core split around its local activity: replayed, the
    groups' starts run in the activity's own task, whose start budget the 45 steps nearly spent.
    Counted afresh after the activity they start as they first did; counted on, the run would
    wait for the next task instead (a timer where the history has a child's start)."""
    from workflows.pacing import StartBudget

    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=pydantic_data_converter)
    name = "map-beside-steps-split"
    history = WorkflowHistory.from_json(workflow_id(name), (HISTORIES / f"{name}.json").read_text())
    assert split_around_local_activity(history)
    with recorded_sizes(name):
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None
    monkeypatch.setattr(StartBudget, "after_local_activity", lambda self: None)
    with recorded_sizes(name):
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is not None
