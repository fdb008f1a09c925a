"""Approvals: a decision on a run's approval gate, applied through the workflow's update, either
by a caller with a bearer token or through a signed approval link, which needs none."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Request
from fastapi.responses import HTMLResponse
from temporalio.service import RPCError

from api import approval_page
from api.actions import check_decision, seat_grants_held
from api.auth import OPERATOR
from api.deps import Operator, RunId, Runs, ServicesDep, SettingsDep, Tenant, signing_key
from api.errors import (
    ApiError,
    ApprovalNotFound,
    Forbidden,
    InvalidLink,
    LinkExpired,
    LinkNotAccepted,
    RunFinished,
    SigningKeyMissing,
    documented,
    from_rpc,
)
from api.idempotency import Claim, IdempotentRoute, idempotent
from api.link_refusals import RefusedLinks
from api.routes import PREFIX
from api.schemas import (
    ApprovalDecisionRequest,
    ApprovalDecisionResponse,
    ApprovalLinkRequest,
    approval_outcome,
    find_approval,
)
from api.settings import ApiSettings
from workflows.contract.signing import (
    ApprovalToken,
    TokenBadSignature,
    TokenExpired,
    TokenInvalid,
    verify_token,
)
from workflows.contract.state import (
    TERMINAL_RUN_STATUSES,
    ApprovalOutcome,
    ApprovalSignal,
    RefusedDecision,
)

router = APIRouter(prefix=PREFIX, tags=["Approvals"], route_class=IdempotentRoute)
Idempotent = Annotated[Claim | None, idempotent(OPERATOR)]


@router.post(
    "/runs/{runId}/approvals/{approvalId}",
    operation_id="applyApprovalDecision",
    summary="Apply approval decision",
    description="Needs taskrunner.operator (or admin) and every grant the gate's approval "
    "lists (the token's `grants` claim or its scopes); scopes alone cannot say which grants, "
    "so a token holding the role but not the grants is a 403.",
    response_model_exclude_none=True,
    responses=documented(400, 401, 403, 404, 409, 503),
)
async def apply_approval_decision(
    principal: Operator,
    idempotency: Idempotent,
    tenant: Tenant,
    runId: RunId,
    approvalId: str,
    body: ApprovalDecisionRequest,
    runs: Runs,
) -> ApprovalDecisionResponse:
    # Only its approvals are needed (their grants never change): a recent read will do.
    state = (await runs.state(tenant, runId, steps_limit=0)).snapshot
    approval = find_approval(state, approvalId)
    if approval is None:
        raise ApprovalNotFound(f"run {runId!r} has no approval {approvalId!r}")
    try:
        actor = principal.acting_as(body.actorId)
        check_decision(principal, approval)
    except Forbidden as exc:
        # The wrong person: refused here, and in the run's log like every refused decision.
        await runs.record_refusal(
            tenant,
            runId,
            RefusedDecision(
                approvalId=approvalId,
                actorId=principal.subject,
                statedActorId=body.actorId,
                decision=body.decision,
                code=exc.code,
                reason=exc.message,
                via="rest",
            ),
        )
        raise
    # The workflow has the last word (the deadline, the requester, duplicates, seats): a refusal
    # comes back as a 4xx and stays in the run's log.
    outcome = await runs.decide(
        tenant,
        runId,
        ApprovalSignal(
            approvalId=approvalId,
            decision=body.decision,
            planHash=body.planHash,
            actorId=actor,
            summary=body.summary,
            via="rest",
            grants=seat_grants_held(principal, approval),
        ),
        # Temporal's own identity of this decision: a retry under the key is never a 2nd vote.
        update_id=idempotency.token if idempotency else None,
        opened_at=approval.requestedAt or "",
    )
    return approval_outcome(outcome)


LinkToken = Annotated[str, Path(max_length=4096, description="The link's signed token")]
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def link_claims(settings: ApiSettings, token: str) -> ApprovalToken:
    """The claims of a link this service signed and that has not expired, or the ApiError."""
    key = signing_key(settings)
    if key is None:
        raise SigningKeyMissing("approval links")
    try:
        return verify_token(key, token, int(time.time()))
    except TokenExpired:
        raise LinkExpired("this approval link has expired") from None
    except TokenBadSignature:
        raise LinkNotAccepted("this approval link was not signed by this service") from None
    except TokenInvalid:
        raise InvalidLink("this is not an approval link") from None


def _pair(claims: ApprovalToken, other: ApprovalToken) -> bool:
    """Whether `other` is the same link with the opposite decision (as a delivery mints them)."""
    mine = {**vars(claims), "decision": None}
    return other.decision != claims.decision and mine == {**vars(other), "decision": None}


@router.get(
    "/approvals/{token}",
    operation_id="showApprovalLink",
    summary="The page of a signed approval link: what it decides, and buttons that POST",
    response_class=HTMLResponse,
    responses={
        200: {"description": "An HTML page; it decides nothing", "content": {"text/html": {}}},
        **{
            status: {"description": "An HTML page saying why the link cannot be used"}
            for status in (400, 401, 404, 410, 503)
        },
    },
)
async def show_approval_link(
    token: LinkToken,
    settings: SettingsDep,
    runs: Runs,
    other: Annotated[
        str | None,
        Query(
            max_length=4096,
            description="The link's sibling with the other decision (`links.review` carries "
            "both): the page then offers both buttons",
        ),
    ] = None,
) -> HTMLResponse:
    """A GET never decides (mail scanners and link previews open every link they see): it shows
    the run, the gate and its message, the plan hash and what the gate still needs, with one
    button per decision the holder has, each POSTing its own token."""
    try:
        claims = link_claims(settings, token)
        buttons = [approval_page.Button(claims.decision, token)]
        if other is not None:
            sibling = link_claims(settings, other)
            if not _pair(claims, sibling):
                raise InvalidLink("the two links of this page are not for the same decision")
            buttons.append(approval_page.Button(sibling.decision, other))
        buttons.sort(key=lambda b: b.decision)  # Approve first, always
        read = await runs.state(claims.tenant, claims.runId, steps_limit=0)
    except RPCError as exc:
        error = from_rpc(exc)
        return approval_page.error_page(error.status, error.code, error.message)
    except ApiError as exc:
        return approval_page.error_page(exc.status, exc.code, exc.message)
    snapshot = read.snapshot
    return approval_page.review_page(
        claims, snapshot, find_approval(snapshot, claims.approvalId), buttons
    )


@router.post(
    "/approvals/{token}",
    operation_id="applyApprovalLink",
    summary="Apply the decision of a signed approval link (no bearer token)",
    response_model=ApprovalDecisionResponse,
    response_model_exclude_none=True,
    responses=documented(400, 401, 404, 409, 410, 503),
)
async def apply_approval_link(
    token: LinkToken,
    request: Request,
    services: ServicesDep,
    runs: Runs,
    body: Annotated[ApprovalLinkRequest | None, Body()] = None,
) -> ApprovalDecisionResponse | HTMLResponse:
    """The link names the tenant, run, approval, plan hash and decision, and holds the authority
    to decide: possession is enough, once. A link used before is 409 whoever sends it.

    A browser's form POST (the buttons of the link's page, with no fields) is answered with a
    page, its errors too; any other caller gets JSON as before."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    settings, refused = services.settings, services.refused_links
    if content_type not in FORM_TYPES:
        return await _apply_link(token, settings, runs, refused, body)
    try:
        claims = link_claims(settings, token)
        outcome = await _decide_link(claims, runs, refused, ApprovalLinkRequest())
    except RPCError as exc:
        error = from_rpc(exc)
        return approval_page.error_page(error.status, error.code, error.message)
    except ApiError as exc:
        return approval_page.error_page(exc.status, exc.code, exc.message)
    return approval_page.outcome_page(claims, outcome)


async def _apply_link(
    token: str,
    settings: ApiSettings,
    runs: Runs,
    refused: RefusedLinks,
    body: ApprovalLinkRequest | None,
) -> ApprovalDecisionResponse:
    claims = link_claims(settings, token)
    outcome = await _decide_link(claims, runs, refused, body or ApprovalLinkRequest())
    return approval_outcome(outcome)


async def _decide_link(
    claims: ApprovalToken, runs: Runs, refused: RefusedLinks, body: ApprovalLinkRequest
) -> ApprovalOutcome:
    if body.decision is not None and body.decision != claims.decision:
        raise InvalidLink(
            f"this link {claims.decision[:-1]}s; it cannot be used to {body.decision[:-1]}"
        )
    # A link refused for good was logged in its run the first time; its repeats (anyone may
    # send it, with no token) get the same answer here and never grow the run's history.
    before = refused.recall(claims)
    if before is not None:
        # A query, not an update: shared reads of the run, nothing written to its history.
        read = await runs.state(claims.tenant, claims.runId, steps_limit=0)
        if read.snapshot.status in TERMINAL_RUN_STATUSES:
            raise RunFinished(claims.runId)
        raise before
    try:
        return await _decide(claims, runs, body)
    except ApiError as exc:
        refused.remember(claims, exc)
        raise


async def _decide(claims: ApprovalToken, runs: Runs, body: ApprovalLinkRequest) -> ApprovalOutcome:
    outcome = await runs.decide(
        claims.tenant,
        claims.runId,
        ApprovalSignal(
            approvalId=claims.approvalId,
            decision=claims.decision,
            planHash=claims.planHash,
            # The vote counts for whom the link was minted for, never for a name in the body:
            # a link holder typing "user:bob" must not fill bob's seat.
            actorId=claims.identity,
            statedActorId=body.actorId,
            summary=body.summary,
            tokenId=claims.token_id,
            via="link",
        ),
    )
    return outcome
