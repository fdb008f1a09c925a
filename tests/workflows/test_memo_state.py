"""The final state a cancelled run leaves in its memo stays within MEMO_STATE_BYTES as Temporal
stores it (the data converter's payload): a prefix of its steps, `totalSteps` the true count."""

from __future__ import annotations

from typing import Any

from temporalio.contrib.pydantic import pydantic_data_converter

from compiler.plan import FailurePolicy
from workflows.contract.state import (
    MEMO_STATE_BYTES,
    RunStateSnapshot,
    StepState,
    bounded_state,
)


def state(steps: int, **extra: Any) -> RunStateSnapshot:
    return RunStateSnapshot(
        runId="r",
        tenant="t",
        pack="p",
        packVersion="1.0.0",
        planHash="sha256:" + "0" * 64,
        status="cancelled",
        failurePolicy=FailurePolicy(),
        createdAt="2026-01-01T00:00:00Z",
        updatedAt="2026-01-01T00:00:00Z",
        steps=[
            StepState(stepId=f"step-{i:05d}", kind="run", status="Skipped", statusReason="cut")
            for i in range(steps)
        ],
        totalSteps=steps,
        **extra,
    )


def stored_bytes(snapshot: RunStateSnapshot) -> int:
    (payload,) = pydantic_data_converter.payload_converter.to_payloads([snapshot])
    return len(payload.data)


def test_a_small_state_is_kept_whole() -> None:
    small = state(5)
    assert bounded_state(small) == small


def test_a_large_state_keeps_the_first_steps_that_fit() -> None:
    large = state(2000)
    assert stored_bytes(large) > MEMO_STATE_BYTES
    held = bounded_state(large)
    assert held is not None
    assert 0 < len(held.steps) < 2000 and held.totalSteps == 2000
    assert held.steps == large.steps[: len(held.steps)]
    assert stored_bytes(held) <= MEMO_STATE_BYTES
    # Not needlessly short: one more step would not have fitted.
    one_more = large.model_copy(update={"steps": large.steps[: len(held.steps) + 1]})
    assert stored_bytes(one_more) > MEMO_STATE_BYTES


def test_a_state_too_large_without_steps_is_not_kept() -> None:
    # Outputs this large leave no room: the reader asks the run instead.
    assert bounded_state(state(3, outputs={"blob": "x" * MEMO_STATE_BYTES})) is None
