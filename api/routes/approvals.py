"""Approvals: a decision on a run's approval gate, applied through the workflow's update."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Operator, RunId, Runs, Tenant
from api.errors import ApprovalNotFound, Forbidden, documented
from api.routes import PREFIX
from api.schemas import (
    ApprovalDecisionRequest,
    ApprovalDecisionResponse,
    approval_outcome,
    find_approval,
)
from workflows.state import ApprovalSignal

router = APIRouter(prefix=PREFIX, tags=["Approvals"])


@router.post(
    "/runs/{runId}/approvals/{approvalId}",
    operation_id="applyApprovalDecision",
    summary="Apply approval decision",
    response_model_exclude_none=True,
    responses=documented(400, 401, 403, 404, 409, 503),
)
async def apply_approval_decision(
    principal: Operator,
    tenant: Tenant,
    runId: RunId,
    approvalId: str,
    body: ApprovalDecisionRequest,
    runs: Runs,
) -> ApprovalDecisionResponse:
    state = await runs.state(tenant, runId, steps_limit=0)  # only its approvals are needed
    approval = find_approval(state, approvalId)
    if approval is None:
        raise ApprovalNotFound(f"run {runId!r} has no approval {approvalId!r}")
    actor = principal.acting_as(body.actorId)
    missing = principal.missing_grants(approval.grants)
    if missing:
        raise Forbidden(f"deciding {approvalId!r} needs the grants: {', '.join(missing)}")
    outcome = await runs.decide(
        tenant,
        runId,
        ApprovalSignal(
            approvalId=approvalId,
            decision=body.decision,
            planHash=body.planHash,
            actorId=actor,
            summary=body.summary,
        ),
    )
    return approval_outcome(outcome)
