"""Every patch the workflows call (`workflow.patched`), in one place, and when they are decided.

A patch's marker goes in the workflow task whose code first asks for it; replaying, `patched` is
True only if the marker is in the task being replayed. Temporal's core can split what one task
did around a local activity: when the worker drops the workflow from its cache while its local
activity finishes (a full cache, `max_cached_workflows=0`, load), the task completes with the
activity's marker and the code after the activity runs in the next task. A later full replay runs
that code in the first task, where a patch marked in the second is not known yet: `patched` says
False, the code goes the old way, and the task fails with TMPRL1100 "Non-deprecated patch marker
encountered ... no corresponding change command" (a run cancelled during a map in levels stayed
Running so, #12).

So before each local activity, a run that began with this code decides every patch at once
(`decide_before_local_activity`): their markers go in the activity's own task, and the code after
it reads the remembered answers (`patched` is asked once per id and workflow, and sends nothing
after). Runs that began before (no marker for PATCH_DECIDED_FIRST) keep asking as they did.
"""

from __future__ import annotations

from temporalio import workflow

PATCH_BOUNDED_STARTS = "bounded-starts-per-task"
"""At most `STARTS_PER_TASK` activities (or their worth in chunk workflows) started in one
workflow task; the rest start in the tasks that follow."""
PATCH_APPROVAL_RULES = "approval-rules-v2"
"""Decisions refused at or past the deadline, `expired` only from the timer, requester and
quorum seats checked, refusals logged from updates too."""
PATCH_ENDED_RUNS = "ended-runs-close-gates"
"""A run that ends cancelled or failed cancels its open approvals and logs its cut-off steps."""
PATCH_CLOSE_AS_ENDED = "close-as-failed-or-canceled"
"""A failed run ends its workflow as Failed (an ApplicationError carrying its RunResult), a
cancelled one as Canceled when Temporal's cancel request came (the Web UI's button, or the API's
right after its `cancel` signal), so the Web UI's status filter and Failures count tell the truth.
Before: every run's workflow Completed with its status in the result."""
PATCH_CANCELLED_STATE_IN_MEMO = "cancelled-state-in-memo"
"""A run closing as Canceled first leaves its final state in its memo (names.MEMO_FINAL_STATE):
a Canceled workflow has no result, so the API reads it from a describe with no worker."""
PATCH_LOG_PAGING = "page-logs-out"
"""Log entries past `logsKeptInRun` are paged out to the artifact store (a local activity) between
top-level steps, and served back in order."""
PATCH_ITEMS_BY_REFERENCE = "map-items-by-reference"
"""A fanned-out map stores its items in the artifact store once; each chunk loads its own."""
PATCH_ITEM_RANGES = "chunk-items-by-range"
"""A chunk names its plainly succeeded items by index range (`ChunkResult.succeededItems`)."""
PATCH_NESTED_LOG_PAGING = "page-logs-out-inside-steps"
"""Log entries are also paged out at boundaries between steps inside a parallel block, map, loop
or conditional, not only between top-level steps."""
PATCH_MAP_LEVELS = "map-fan-out-in-levels"
"""A map of more chunks than MAP_CHILDREN_PER_WORKFLOW starts groups of chunks, not the chunks."""
PATCH_MAP_RANGES = "map-items-range"
"""A fanned-out map of a range stores nothing: each chunk computes its own slice of the range."""
PATCH_HELD_ITEMS = "map-items-held"
"""A map in levels holds its items as a status byte each (workflows/held_items.py) rather than
registering a step state per step as each group starts."""
PATCH_NESTED_CONTINUE_AS_NEW = "continue-as-new-inside-steps"
"""A run also continues as new at a boundary between steps inside a loop or conditional (when
nothing runs beside it), carrying where each enclosing step stands (`CarriedState.progress`)."""
PATCH_PAGE_ITERATIONS = "page-iterations-out"
"""Before continuing as new, the finished iterations of loops are paged out to the artifact store
(`CarriedState.stepSegments`) and the iterations not begun are left to be registered again, so
the carried state does not grow with a loop's length."""

PATCH_DECIDED_FIRST = "patches-decided-before-local-activities"
"""Every patch below is decided before a local activity (`decide_before_local_activity`)."""

PATCHES = (
    PATCH_BOUNDED_STARTS,
    PATCH_APPROVAL_RULES,
    PATCH_ENDED_RUNS,
    PATCH_CLOSE_AS_ENDED,
    PATCH_CANCELLED_STATE_IN_MEMO,
    PATCH_LOG_PAGING,
    PATCH_ITEMS_BY_REFERENCE,
    PATCH_ITEM_RANGES,
    PATCH_NESTED_LOG_PAGING,
    PATCH_MAP_LEVELS,
    PATCH_MAP_RANGES,
    PATCH_HELD_ITEMS,
    PATCH_NESTED_CONTINUE_AS_NEW,
    PATCH_PAGE_ITERATIONS,
)
"""In the order they are decided (a new patch goes at the end: the order is in histories)."""


def decide_before_local_activity() -> bool:
    """Call right before scheduling a local activity: in a run that began with this code, every
    patch is decided now, in this task; the rest of the run asks them again for free. True for
    such a run (workflows/local_activities.py then also starts the start budget afresh)."""
    if not workflow.patched(PATCH_DECIDED_FIRST):
        return False
    for patch in PATCHES:
        workflow.patched(patch)
    return True
