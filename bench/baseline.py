"""The hand-written baseline: a plain Temporal workflow calling the same activity directly.

It does what a 10-step pack of `builtin:noop` does, minus everything TaskRunner adds (the plan,
the interpreter, state, logs, search attributes), so the ratio of the two is our overhead.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows.contract.activities import RUN_STEP, RunStepRequest, RunStepResult


@workflow.defn(name="BaselineSteps")
class BaselineSteps:
    @workflow.run
    async def run(self, steps: int) -> int:
        info = workflow.info()
        for index in range(steps):
            await workflow.execute_activity(
                RUN_STEP,
                RunStepRequest(
                    runId=info.workflow_id, tenant="bench", stepId=f"s{index}", uses="builtin:noop"
                ),
                result_type=RunStepResult,
                start_to_close_timeout=timedelta(seconds=60),
                heartbeat_timeout=timedelta(seconds=20),
                retry_policy=RetryPolicy(maximum_attempts=5),
            )
        return steps
