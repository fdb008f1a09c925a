"""The PackRun workflow's published names: type, signals, update, queries, search attributes.

Chat bots, the Web UI and the API all use these; they are an interface and do not change.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

WORKFLOW_TYPE = "PackRun"
CHUNK_WORKFLOW_TYPE = "PackRunMapChunk"

SIGNAL_APPROVAL = "approval"
SIGNAL_CANCEL = "cancel"
SIGNAL_DECISION_REFUSED = "decision_refused"
"""The API refused a decision before it reached the run (a missing grant, say): log it there."""
UPDATE_DECIDE_APPROVAL = "decide_approval"
QUERY_STATE = "state"
QUERY_LOGS = "logs"
QUERY_ARTIFACTS = "artifacts"

SA_TENANT = SearchAttributeKey.for_keyword("TaskRunnerTenant")
SA_PACK = SearchAttributeKey.for_keyword("TaskRunnerPack")
SA_STATUS = SearchAttributeKey.for_keyword("TaskRunnerStatus")
SA_PLAN_HASH = SearchAttributeKey.for_keyword("TaskRunnerPlanHash")
SEARCH_ATTRIBUTES = (SA_TENANT, SA_PACK, SA_STATUS, SA_PLAN_HASH)

DEFAULT_TENANT = "default"


def workflow_id(tenant: str, run_id: str) -> str:
    """The workflow id of a run: tenant-scoped so two tenants' run ids never collide.

    Nothing parses this back: the tenant and run id travel in the workflow input.
    """
    return f"taskrunner/{tenant}/{run_id}"
