"""Determinism: a committed history of a representative run replays on today's workflow code."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.worker import WORKFLOWS

HISTORIES = Path(__file__).parent / "histories"


async def test_recorded_histories_replay() -> None:
    files = sorted(HISTORIES.glob("*.json"))
    assert files, "no recorded histories: run python -m tests.workflows.record_history"
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=pydantic_data_converter)
    for path in files:
        history = WorkflowHistory.from_json(path.stem, path.read_text())
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"


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
