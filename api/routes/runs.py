"""Runs: create a run from a manifest, list a tenant's runs, read a run's state, cancel it."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Response
from starlette.concurrency import run_in_threadpool

from api.actions import available_actions
from api.auth import OPERATOR, Principal
from api.database import ApiDatabase, available
from api.deps import (
    CompileDep,
    DatabaseDep,
    Operator,
    RunId,
    Runs,
    ServicesDep,
    SettingsDep,
    TemporalClient,
    Tenant,
    Viewer,
)
from api.errors import RunAlreadyExists, RunFinished, documented
from api.gateway import STEPS_PAGE, RunGateway
from api.idempotency import REPLAY_HEADER, Claim, IdempotentRoute, idempotent
from api.listing import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    RunFilter,
    list_runs,
    parse_statuses,
    parse_time,
    quotable,
)
from api.routes import PREFIX
from api.routes.packs import manifest_source
from api.schemas import (
    MAX_RUN_ID_LENGTH,
    PLAN_HASH_PATTERN,
    AvailableAction,
    CancelResponse,
    CreateRunRequest,
    RunList,
    RunStateResponse,
    Timestamp,
    run_state,
)
from api.settings import ApiSettings
from workflows.contract.state import CancelSignal, RunStateSnapshot, WebhookRef

router = APIRouter(prefix=PREFIX, tags=["Runs"], route_class=IdempotentRoute)
Idempotent = Annotated[Claim | None, idempotent(OPERATOR)]

LOCATION: dict[str, Any] = {
    "headers": {"Location": {"description": "URL of the run", "schema": {"type": "string"}}}
}


def run_location(settings: ApiSettings, run_id: str) -> str:
    return f"{(settings.public_url or '').rstrip('/')}{PREFIX}/runs/{run_id}"


def new_run_id() -> str:
    return f"run-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"


def reserve_run_id(body: Any) -> str | None:
    """The run id a keyed create fixes with its claim, before the start: the body's, or a new
    one (a body whose runId is no run id fails validation, and starts nothing)."""
    given = body.get("runId") if isinstance(body, dict) else None
    if given is None:
        return new_run_id()
    return given if isinstance(given, str) and len(given) <= MAX_RUN_ID_LENGTH else None


IdempotentCreate = Annotated[Claim | None, idempotent(OPERATOR, reserve=reserve_run_id)]


async def tenant_webhooks(database: ApiDatabase, tenant: str) -> list[WebhookRef]:
    """The tenant's webhooks as registered now: a run keeps these."""
    with available():
        registered = await database.webhooks.list(tenant)
    return [
        WebhookRef(id=w.id, url=w.url, events=w.events, secretCiphertext=w.secret_ciphertext)
        for w in registered
    ]


@router.post(
    "/runs",
    status_code=201,
    operation_id="createPackRun",
    summary="Create a pack run",
    response_model_exclude_none=True,
    responses={201: LOCATION, **documented(400, 401, 403, 409, 413, 503, plan_errors=True)},
)
async def create_pack_run(
    principal: Operator,
    idempotency: IdempotentCreate,
    settings: SettingsDep,
    compile_pack: CompileDep,
    body: CreateRunRequest,
    response: Response,
    runs: Runs,
    database: DatabaseDep,
    tenant: Tenant,
) -> RunStateResponse:
    """The run gets the tenant's webhooks as registered now; later registrations apply to later
    runs. The tenant is the header's or the body's `tenantId` (they must agree), one of the
    token's tenants."""
    manifest, pack_digest = await manifest_source(database, tenant, body.manifest, body.pack)
    compiled = await run_in_threadpool(compile_pack, manifest, body.inputs)
    claim = idempotency
    # Under an Idempotency-Key the run id was fixed with the key's claim, before this start.
    run_id = (claim.run_id if claim else None) or body.runId or new_run_id()
    webhooks = await tenant_webhooks(database, tenant)
    token = claim.token if claim else None
    try:
        snapshot = await runs.start(
            compiled,
            tenant=tenant,
            run_id=run_id,
            actor=principal.subject,
            webhooks=webhooks,
            request_token=token,
            pack_digest=pack_digest,
        )
    except RunAlreadyExists:
        # A retry of a keyed create whose first attempt started the run but could not record
        # its answer: that run is the answer, never a second one.
        if token is None or not await runs.started_by(tenant, run_id, token):
            raise
        snapshot = (await runs.state(tenant, run_id)).snapshot
        response.headers[REPLAY_HEADER] = "true"
    response.headers["Location"] = run_location(settings, run_id)
    return run_state(snapshot)


@router.get(
    "/runs",
    operation_id="listPackRuns",
    summary="List runs",
    response_model_exclude_none=True,
    responses=documented(400, 401, 403, 503),
)
async def list_pack_runs(
    principal: Viewer,
    tenant: Tenant,
    client: TemporalClient,
    services: ServicesDep,
    status: Annotated[
        list[str] | None,
        Query(description="Run status; repeat it or separate by commas for several"),
    ] = None,
    pack: Annotated[str | None, Query(description="The pack's name")] = None,
    planHash: Annotated[str | None, Query(pattern=PLAN_HASH_PATTERN)] = None,
    createdAfter: Annotated[
        Timestamp | None, Query(description="RFC 3339; runs started after")
    ] = None,
    createdBefore: Annotated[
        Timestamp | None, Query(description="RFC 3339; runs started before")
    ] = None,
    pageSize: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    pageToken: Annotated[
        str | None, Query(max_length=4096, description="`nextPageToken` of the previous page")
    ] = None,
) -> RunList:
    """The tenant's runs, from Temporal visibility: open runs first (newest first), then finished
    ones (most recently finished first). Visibility trails a run's changes by a moment."""
    filters = RunFilter(
        statuses=parse_statuses(status or []),
        pack=quotable("pack", pack),
        plan_hash=planHash,
        created_after=parse_time("createdAfter", createdAfter),
        created_before=parse_time("createdBefore", createdBefore),
    )
    return await list_runs(
        client,
        services.page_tokens,
        tenant,
        filters,
        page_size=pageSize,
        page_token=pageToken,
        timeout=timedelta(seconds=services.settings.query_timeout_seconds),
    )


READ_HEADERS: dict[str, Any] = {
    "ETag": {
        "description": "The state's version: send it as `If-None-Match` to get a 304 if unchanged",
        "schema": {"type": "string"},
    },
    "Age": {
        "description": "Seconds since the run answered this state (it may be up to a couple of "
        "seconds old; older only when the run does not answer, see `Warning`)",
        "schema": {"type": "integer"},
    },
    "Warning": {
        "description": '`110 - "Response is Stale"` with why: the run did not answer in time '
        "(a worker outage) and this is the last state the API knows",
        "schema": {"type": "string"},
    },
}


@router.get(
    "/runs/{runId}",
    operation_id="getRunState",
    summary="Get run state",
    response_model=RunStateResponse,
    response_model_exclude_none=True,
    responses={
        200: {"headers": READ_HEADERS},
        304: {"description": "Not modified since the `If-None-Match` ETag"},
        **documented(400, 401, 403, 404, 503),
    },
)
async def get_run_state(
    principal: Viewer,
    tenant: Tenant,
    runId: RunId,
    runs: Runs,
    database: DatabaseDep,
    settings: SettingsDep,
    stepsOffset: Annotated[int, Query(ge=0, description="First step of the page")] = 0,
    stepsLimit: Annotated[
        int, Query(ge=1, le=STEPS_PAGE, description="Steps per page")
    ] = STEPS_PAGE,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
    include: Annotated[
        list[Literal["outputs"]] | None,
        Query(description="`outputs`: each step's outputs too (for a failed step, why it failed)"),
    ] = None,
) -> Response:
    """A large run's steps come a page at a time: `totalSteps` says how many there are.

    The state may be up to a couple of seconds old (`Age` says how old): concurrent readers
    share one read of the run. During a worker outage the last known state answers, marked stale
    (`Warning`), rather than an error."""
    read = await runs.state(tenant, runId, steps_offset=stepsOffset, steps_limit=stepsLimit)
    state = run_state(read.snapshot)
    if include and "outputs" in include:
        # Outputs are not in the shared, cached reads: asked for, they come from the run itself.
        full = await runs.state_with_outputs(tenant, runId)
        outputs = {step.stepId: step.outputs for step in full.steps}
        for shown in state.steps:
            shown.outputs = outputs.get(shown.stepId, {})
    if read.snapshot.status in ("failed", "cancelled"):
        # Only an ended run can have been redriven; the redrives are the API's own records.
        with available():
            state.redrives = await database.redrives.of(tenant, runId) or None
    state.availableActions = await _actions(principal, read.snapshot, runs, settings)
    body = state.model_dump_json(exclude_none=True).encode()
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    headers = {"ETag": etag, "Age": str(int(read.age)), "Cache-Control": "no-cache"}
    if read.stale:
        headers["Warning"] = f'110 - "Response is Stale: {read.stale}"'
    if if_none_match is not None and etag in {t.strip() for t in if_none_match.split(",")}:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


async def _actions(
    principal: Principal, snapshot: RunStateSnapshot, runs: RunGateway, settings: ApiSettings
) -> list[AvailableAction]:
    requester = None
    if principal.has_scope(OPERATOR) and any(
        a.status == "pending" and a.allowRequester is False for a in snapshot.approvals
    ):
        # Only the run's input names who requested it (read from its first event, no worker).
        requester = await runs.requester(snapshot.tenant, snapshot.runId)
    return available_actions(
        principal, snapshot, run_location(settings, snapshot.runId), requester=requester
    )


@router.post(
    "/runs/{runId}/cancel",
    status_code=202,
    operation_id="cancelRun",
    summary="Cancel a run",
    responses={202: LOCATION, **documented(400, 401, 403, 404, 409, 503)},
)
async def cancel_run(
    principal: Operator,
    idempotency: Idempotent,
    tenant: Tenant,
    runId: RunId,
    runs: Runs,
    settings: SettingsDep,
    response: Response,
) -> CancelResponse:
    try:
        await runs.cancel(
            tenant,
            runId,
            CancelSignal(actorId=principal.subject),
            request_id=idempotency.token if idempotency else None,
        )
    except RunFinished:
        # A retry of a keyed cancel whose answer was lost, the run since ended by it: 202 again.
        if idempotency is None or not idempotency.taken_over:
            raise
        ended = (await runs.state(tenant, runId, steps_limit=0)).snapshot
        if ended.status != "cancelled":
            raise
    response.headers["Location"] = run_location(settings, runId)
    return CancelResponse()
