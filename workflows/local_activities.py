"""How the workflows run a local activity: every patch decided first, the start budget afresh
after (workflows/patches.py says why: core can split a workflow task around a local activity, and
a full replay then runs the code after it in the activity's own task)."""

from __future__ import annotations

from typing import Any, TypeVar

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.pacing import StartBudget
    from workflows.patches import decide_before_local_activity

T = TypeVar("T")


async def run_local_activity(
    activity: str,
    arg: Any,
    *,
    result_type: type[T],
    budget: StartBudget | None = None,
    **options: Any,
) -> T:
    """`workflow.execute_local_activity`, for a run that began with this code safe to resume in
    either task. `budget`: the start budget the code after it draws on, if any."""
    decided = decide_before_local_activity()
    try:
        result: T = await workflow.execute_local_activity(
            activity, arg, result_type=result_type, **options
        )
        return result
    finally:
        if decided and budget is not None:
            budget.after_local_activity()
