"""The PackRun workflow's published names: type, signals, update, queries, search attributes.

Chat bots, the Web UI and the API all use these; they are an interface and do not change.
"""

from __future__ import annotations

from datetime import UTC, datetime

from temporalio.common import SearchAttributeKey

WORKFLOW_TYPE = "PackRun"
CHUNK_WORKFLOW_TYPE = "PackRunMapChunk"
GROUP_WORKFLOW_TYPE = "PackRunMapGroup"
"""Between a very large map and its chunks: starts a contiguous range of them (or of further
groups) so no workflow starts more than `compiler.history.MAP_CHILDREN_PER_WORKFLOW` children."""
SCHEDULED_WORKFLOW_TYPE = "PackRunScheduled"
"""What a Temporal Schedule starts: it starts one PackRun as its child and waits for it."""

SIGNAL_APPROVAL = "approval"
SIGNAL_CANCEL = "cancel"
SIGNAL_DECISION_REFUSED = "decision_refused"
"""The API refused a decision before it reached the run (a missing grant, say): log it there."""
UPDATE_DECIDE_APPROVAL = "decide_approval"
QUERY_STATE = "state"
QUERY_LOGS = "logs"
QUERY_ARTIFACTS = "artifacts"

RUN_FAILED_ERROR = "RunFailed"
"""The type of the ApplicationError a failed run ends its workflow with (Temporal shows it as
Failed); its one detail is the run's RunResult. Any other failure is Temporal's, not the run's."""

MEMO_FINAL_STATE = "taskrunnerFinalState"
"""The memo key under which a run closing as Canceled leaves its final RunStateSnapshot (a
Canceled workflow has no result, and Temporal's cancel carries no details), so the API reads it
from a describe with no worker. Its steps are a prefix that fits `MEMO_STATE_BYTES`;
`totalSteps` is the true count. The listing never decodes it."""

SA_TENANT = SearchAttributeKey.for_keyword("TaskRunnerTenant")
SA_PACK = SearchAttributeKey.for_keyword("TaskRunnerPack")
SA_STATUS = SearchAttributeKey.for_keyword("TaskRunnerStatus")
SA_PLAN_HASH = SearchAttributeKey.for_keyword("TaskRunnerPlanHash")
SEARCH_ATTRIBUTES = (SA_TENANT, SA_PACK, SA_STATUS, SA_PLAN_HASH)


def schedule_id(tenant: str, schedule: str) -> str:
    """The Temporal Schedule id of a tenant's schedule (tenant-scoped, as run ids are)."""
    return f"taskrunner/{tenant}/{schedule}"


def scheduled_run_id(schedule: str, fired_at: datetime) -> str:
    """The run id of one firing of a schedule: the schedule's id and the second it fired."""
    return f"{schedule}-{fired_at.astimezone(UTC):%Y%m%dT%H%M%SZ}"


def workflow_id(tenant: str, run_id: str) -> str:
    """The workflow id of a run: tenant-scoped so two tenants' run ids never collide.

    Nothing parses this back: the tenant and run id travel in the workflow input.
    """
    return f"taskrunner/{tenant}/{run_id}"
