"""PackRunScheduled: what a Temporal Schedule starts for each firing of a TaskRunner schedule.

A schedule's action is fixed when it is created, but each run needs its own run id and request
time. So the schedule starts this small workflow, which starts one PackRun as its child, with
the run id `<scheduleId>-<UTC second it fired>` and the firing's time, and waits for it to end:
the schedule's overlap policy (skip by default) then applies to the runs themselves. The child
is abandoned, never cancelled, when this workflow ends: a run, once started, runs to its end.
"""

from __future__ import annotations

import contextlib

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ChildWorkflowError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from workflows.contract.names import (
        SA_PACK,
        SA_PLAN_HASH,
        SA_STATUS,
        SA_TENANT,
        SCHEDULED_WORKFLOW_TYPE,
        WORKFLOW_TYPE,
        scheduled_run_id,
        workflow_id,
    )
    from workflows.contract.state import PackRunInput, RunResult, ScheduledStart
    from workflows.contract.times import rfc3339

# The listing's memo keys (api.listing.MEMO_*), as the API sets them when it starts a run.
MEMO_RUN_ID = "runId"
MEMO_CREATED_AT = "createdAt"
MEMO_PACK_VERSION = "packVersion"
MEMO_PACK_DIGEST = "packDigest"


@workflow.defn(name=SCHEDULED_WORKFLOW_TYPE)
class PackRunScheduled:
    @workflow.run
    async def run(self, start: ScheduledStart) -> str:
        fired = workflow.now()
        run_id = scheduled_run_id(start.scheduleId, fired)
        meta = start.meta.model_copy(update={"runId": run_id, "requestedAt": rfc3339(fired)})
        plan = start.plan
        handle = await workflow.start_child_workflow(
            WORKFLOW_TYPE,
            PackRunInput(plan=plan, planHash=start.planHash, meta=meta),
            id=workflow_id(meta.tenant, run_id),
            result_type=RunResult,
            parent_close_policy=ParentClosePolicy.ABANDON,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(SA_TENANT, meta.tenant),
                    SearchAttributePair(SA_PACK, plan.pack.name),
                    SearchAttributePair(SA_STATUS, "pending"),
                    SearchAttributePair(SA_PLAN_HASH, start.planHash),
                ]
            ),
            memo={
                MEMO_RUN_ID: run_id,
                MEMO_CREATED_AT: meta.requestedAt,
                MEMO_PACK_VERSION: plan.pack.version,
                MEMO_PACK_DIGEST: meta.packDigest or "",
            },
            static_summary=f"pack {plan.pack.name}@{plan.pack.version} run {run_id} "
            f"(schedule {start.scheduleId})",
        )
        # A run that failed or was cancelled says so in its own state.
        with contextlib.suppress(ChildWorkflowError):
            await handle
        return run_id
