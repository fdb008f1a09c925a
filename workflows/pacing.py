"""Pacing: how many activities and child workflows one workflow task may start.

Each start costs the task its bookkeeping (the step's state, a chained log entry, the request's
payload). A map with a large `maxParallel` that started everything at once held one task past
Temporal's 2 s deadlock detector (TMPRL1101). The interpreter takes a slot here before each start.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.patches import PATCH_BOUNDED_STARTS

STARTS_PER_TASK = 50
"""Each start costs the task its bookkeeping (the step's state, a chained log entry, the
request's payload): 500 at once took 6.5 s on a busy 2-core box, past the 2 s deadlock detector
(TMPRL1101)."""
CHUNK_START_COST = 10
"""A chunk workflow's start, in activity starts: it registers up to 500 item steps in the parent
and carries its slice of items."""
NEXT_TASK = timedelta(milliseconds=1)


class StartBudget:
    """Spreads the start of many activities and child workflows over several workflow tasks.

    A workflow task is told apart from the next by the history length it sees (deterministic on
    replay: it is the history's own). Past the budget, a start waits for the next task, which a
    1 ms durable timer guarantees even when nothing else is due to wake the workflow.
    """

    def __init__(self, per_task: int | None = None) -> None:
        self.per_task = per_task or STARTS_PER_TASK
        self._task_mark = -1
        self._used = 0
        self._tick: asyncio.Task[None] | None = None

    def after_local_activity(self) -> None:
        """Start counting afresh: the code after a local activity may run in the activity's own
        task (replaying a history core split around it) or in the next (as it first ran), and
        the history length that tells tasks apart differs between the two; counted from zero
        either way, the starts it makes are the same."""
        self._task_mark, self._used = -1, 0

    async def take(self, cost: int = 1) -> None:
        while True:
            mark = workflow.info().get_current_history_length()
            if mark != self._task_mark:
                self._task_mark, self._used = mark, 0
            if self._used == 0 or self._used + cost <= self.per_task:
                self._used += cost
                return
            # Histories recorded before this started everything in one task: they replay so.
            if not workflow.patched(PATCH_BOUNDED_STARTS):
                return
            if self._tick is None or self._tick.done():
                self._tick = asyncio.ensure_future(
                    workflow.sleep(NEXT_TASK, summary="spread starts over workflow tasks")
                )
            # Shielded: one waiter's cancellation must not cancel the timer the others wait on.
            await asyncio.shield(self._tick)
