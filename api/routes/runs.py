"""Runs: create a run from a manifest, read its state, cancel it."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from api.deps import (
    Operator,
    RunId,
    Runs,
    SettingsDep,
    Tenant,
    TenantHeader,
    Viewer,
    resolve_tenant,
)
from api.errors import documented
from api.gateway import STEPS_PAGE
from api.routes import PREFIX
from api.schemas import (
    CancelResponse,
    CreateRunRequest,
    RunStateResponse,
    run_state,
)
from compiler import compile_manifest
from workflows.settings import Settings
from workflows.state import CancelSignal

router = APIRouter(prefix=PREFIX, tags=["Runs"])

LOCATION: dict[str, Any] = {
    "headers": {"Location": {"description": "URL of the run", "schema": {"type": "string"}}}
}


def run_location(settings: Settings, run_id: str) -> str:
    return f"{(settings.public_url or '').rstrip('/')}{PREFIX}/runs/{run_id}"


def new_run_id() -> str:
    return f"run-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"


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
    settings: SettingsDep,
    body: CreateRunRequest,
    response: Response,
    runs: Runs,
    tenant_header: TenantHeader = None,
) -> RunStateResponse:
    tenant = resolve_tenant(settings, tenant_header, body.tenantId)
    compiled = await run_in_threadpool(compile_manifest, body.manifest, body.inputs)
    run_id = body.runId or new_run_id()
    snapshot = await runs.start(compiled, tenant=tenant, run_id=run_id, actor=principal.subject)
    response.headers["Location"] = run_location(settings, run_id)
    return run_state(snapshot)


@router.get(
    "/runs/{runId}",
    operation_id="getRunState",
    summary="Get run state",
    response_model_exclude_none=True,
    responses=documented(400, 401, 403, 404, 503),
)
async def get_run_state(
    principal: Viewer,
    tenant: Tenant,
    runId: RunId,
    runs: Runs,
    stepsOffset: Annotated[int, Query(ge=0, description="First step of the page")] = 0,
    stepsLimit: Annotated[
        int, Query(ge=1, le=STEPS_PAGE, description="Steps per page")
    ] = STEPS_PAGE,
) -> RunStateResponse:
    """A large run's steps come a page at a time: `totalSteps` says how many there are."""
    state = await runs.state(tenant, runId, steps_offset=stepsOffset, steps_limit=stepsLimit)
    return run_state(state)


@router.post(
    "/runs/{runId}/cancel",
    status_code=202,
    operation_id="cancelRun",
    summary="Cancel a run",
    responses={202: LOCATION, **documented(400, 401, 403, 404, 409, 503)},
)
async def cancel_run(
    principal: Operator,
    tenant: Tenant,
    runId: RunId,
    runs: Runs,
    settings: SettingsDep,
    response: Response,
) -> CancelResponse:
    await runs.cancel(tenant, runId, CancelSignal(actorId=principal.subject))
    response.headers["Location"] = run_location(settings, runId)
    return CancelResponse()
