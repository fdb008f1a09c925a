"""Schedules: Temporal Schedules that start runs of a registered pack (on the Web UI's Schedules
page too); create, list, read, pause, unpause, trigger now, delete.

The pack is resolved and compiled with the schedule's inputs when it is created: every firing
runs that plan (a later version of the pack needs a new schedule), so a firing never fails on a
manifest error. Each firing starts `PackRunScheduled` (workflows/scheduled.py), which starts
the run `<scheduleId>-<UTC time>` and waits for it, so the overlap policy (default `skip`)
applies to the runs. Reading takes `taskrunner.viewer`; everything else `taskrunner.operator`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Response
from starlette.concurrency import run_in_threadpool
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleDescription,
    ScheduleHandle,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
)
from temporalio.service import RPCError, RPCStatusCode

from api import errors
from api.database import ApiDatabase, available
from api.deps import (
    CompileDep,
    DatabaseDep,
    Operator,
    SettingsDep,
    TemporalClient,
    Tenant,
    Viewer,
)
from api.errors import documented
from api.routes import PREFIX
from api.routes.packs import resolve_pack
from api.routes.runs import tenant_webhooks
from api.schemas import (
    SCHEDULE_ID_PATTERN,
    CreateScheduleRequest,
    ScheduleAction,
    ScheduleList,
    SchedulePauseRequest,
    ScheduleResponse,
)
from db.schedules import Schedule as ScheduleRow
from db.schedules import ScheduleExists
from workflows.contract.names import SCHEDULED_WORKFLOW_TYPE, schedule_id
from workflows.contract.state import RunMeta, ScheduledStart
from workflows.contract.times import rfc3339

router = APIRouter(prefix=PREFIX, tags=["Schedules"])

ScheduleId = Annotated[str, Path(pattern=SCHEDULE_ID_PATTERN)]
OVERLAP = {
    "skip": ScheduleOverlapPolicy.SKIP,
    "bufferOne": ScheduleOverlapPolicy.BUFFER_ONE,
    "bufferAll": ScheduleOverlapPolicy.BUFFER_ALL,
    "cancelOther": ScheduleOverlapPolicy.CANCEL_OTHER,
    "terminateOther": ScheduleOverlapPolicy.TERMINATE_OTHER,
    "allowAll": ScheduleOverlapPolicy.ALLOW_ALL,
}


def _response(row: ScheduleRow, description: ScheduleDescription | None) -> ScheduleResponse:
    state = description.schedule.state if description else None
    info = description.info if description else None
    return ScheduleResponse(
        scheduleId=row.id,
        pack=row.pack_name,
        packVersion=row.pack_version,
        packDigest=row.pack_digest,
        inputs=row.inputs,
        cron=row.cron,
        timezone=row.timezone,
        overlapPolicy=row.overlap,
        catchupWindowSeconds=row.catchup_window_seconds,
        paused=bool(state and state.paused),
        note=(state.note or None) if state else None,
        nextRunTimes=[rfc3339(t) for t in (info.next_action_times[:5] if info else [])],
        recentActions=[
            ScheduleAction(scheduledAt=rfc3339(a.scheduled_at), startedAt=rfc3339(a.started_at))
            for a in (info.recent_actions if info else [])
        ],
        createdAt=rfc3339(row.created_at),
        createdBy=row.created_by,
    )


async def _row(database: ApiDatabase, tenant: str, schedule: str) -> ScheduleRow:
    with available():
        row = await database.schedules.get(tenant, schedule)
    if row is None:
        raise errors.ScheduleNotFound(f"no schedule {schedule!r}")
    return row


def _handle(client: Client, tenant: str, schedule: str) -> ScheduleHandle:
    return client.get_schedule_handle(schedule_id(tenant, schedule))


async def _schedule(
    database: ApiDatabase,
    client: Client,
    tenant: str,
    schedule: str,
    act: Callable[[ScheduleHandle], Awaitable[None]] | None = None,
) -> ScheduleResponse:
    """The tenant's schedule, after `act` (pause, unpause, trigger) when given, as Temporal
    describes it now. Its record is looked up first, so another tenant's id is a 404 and
    nothing is done to it."""
    row = await _row(database, tenant, schedule)
    handle = _handle(client, tenant, schedule)
    if act is not None:
        await act(handle)
    return _response(row, await _describe(handle))


async def _describe(handle: ScheduleHandle) -> ScheduleDescription | None:
    try:
        return await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


@router.post(
    "/schedules",
    status_code=201,
    operation_id="createSchedule",
    summary="Schedule runs of a registered pack (a Temporal Schedule)",
    response_model_exclude_none=True,
    responses=documented(400, 401, 403, 404, 409, 503, plan_errors=True),
)
async def create_schedule(
    principal: Operator,
    tenant: Tenant,
    settings: SettingsDep,
    database: DatabaseDep,
    client: TemporalClient,
    compile_pack: CompileDep,
    body: CreateScheduleRequest,
) -> ScheduleResponse:
    record = await resolve_pack(database, tenant, body.pack)
    compiled = await run_in_threadpool(compile_pack, record.manifest, body.inputs)
    row = ScheduleRow(
        tenant=tenant,
        id=body.scheduleId,
        pack_name=record.name,
        pack_version=record.version,
        pack_digest=record.digest,
        inputs=dict(compiled.plan.inputs),
        cron=body.cron,
        timezone=body.timezone,
        overlap=body.overlapPolicy,
        catchup_window_seconds=body.catchupWindowSeconds,
        created_at=datetime.now(UTC),
        created_by=principal.subject,
    )
    meta = RunMeta(
        runId=body.scheduleId,  # each firing's run id replaces it (workflows/scheduled.py)
        tenant=tenant,
        actor=f"schedule:{body.scheduleId}",
        requestedAt=rfc3339(row.created_at),
        heartbeatTimeoutSeconds=settings.heartbeat_timeout_seconds,
        activityAttempts=settings.activity_attempts,
        webhooks=await tenant_webhooks(database, tenant),
        packDigest=record.digest,
    )
    try:
        with available():
            await database.schedules.add(row)  # claims the id first: a race makes one schedule
    except ScheduleExists:
        raise errors.ScheduleExistsError(f"schedule {body.scheduleId!r} exists") from None
    try:
        await client.create_schedule(
            schedule_id(tenant, body.scheduleId),
            Schedule(
                action=ScheduleActionStartWorkflow(
                    SCHEDULED_WORKFLOW_TYPE,
                    ScheduledStart(
                        scheduleId=body.scheduleId,
                        plan=compiled.plan,
                        planHash=compiled.plan_hash,
                        meta=meta,
                    ),
                    id=f"taskrunner-scheduled/{tenant}/{body.scheduleId}",
                    task_queue=settings.task_queue,
                ),
                spec=ScheduleSpec(cron_expressions=[body.cron], time_zone_name=body.timezone),
                policy=SchedulePolicy(
                    overlap=OVERLAP[body.overlapPolicy],
                    catchup_window=timedelta(seconds=body.catchupWindowSeconds),
                ),
                state=ScheduleState(
                    note=f"pack {record.name}@{record.version}, created by {principal.subject}"
                ),
            ),
        )
    except BaseException as exc:
        with available():
            await database.schedules.remove(tenant, body.scheduleId)
        if isinstance(exc, ScheduleAlreadyRunningError):
            raise errors.ScheduleExistsError(f"schedule {body.scheduleId!r} exists") from None
        if isinstance(exc, RPCError) and exc.status == RPCStatusCode.INVALID_ARGUMENT:
            raise errors.InvalidSchedule(f"Temporal refused the schedule: {exc.message}") from None
        raise
    return _response(row, await _describe(_handle(client, tenant, body.scheduleId)))


@router.get(
    "/schedules",
    operation_id="listSchedules",
    summary="List the tenant's schedules",
    response_model_exclude_none=True,
    responses=documented(400, 401, 403, 503),
)
async def list_schedules(
    principal: Viewer, tenant: Tenant, database: DatabaseDep, client: TemporalClient
) -> ScheduleList:
    with available():
        rows = await database.schedules.list(tenant)
    return ScheduleList(
        schedules=[_response(row, await _describe(_handle(client, tenant, row.id))) for row in rows]
    )


@router.get(
    "/schedules/{scheduleId}",
    operation_id="getSchedule",
    summary="A schedule: its pack, spec, whether it is paused, next and recent firings",
    response_model_exclude_none=True,
    responses=documented(400, 401, 403, 404, 503),
)
async def get_schedule(
    principal: Viewer,
    tenant: Tenant,
    database: DatabaseDep,
    client: TemporalClient,
    scheduleId: ScheduleId,
) -> ScheduleResponse:
    return await _schedule(database, client, tenant, scheduleId)


@router.post(
    "/schedules/{scheduleId}/pause",
    operation_id="pauseSchedule",
    summary="Pause a schedule (runs in flight go on)",
    response_model_exclude_none=True,
    responses=documented(400, 401, 403, 404, 503),
)
async def pause_schedule(
    principal: Operator,
    tenant: Tenant,
    database: DatabaseDep,
    client: TemporalClient,
    scheduleId: ScheduleId,
    body: SchedulePauseRequest | None = None,
) -> ScheduleResponse:
    note = (body.note if body else None) or f"paused by {principal.subject}"
    return await _schedule(database, client, tenant, scheduleId, lambda h: h.pause(note=note))


@router.post(
    "/schedules/{scheduleId}/unpause",
    operation_id="unpauseSchedule",
    summary="Unpause a schedule",
    response_model_exclude_none=True,
    responses=documented(400, 401, 403, 404, 503),
)
async def unpause_schedule(
    principal: Operator,
    tenant: Tenant,
    database: DatabaseDep,
    client: TemporalClient,
    scheduleId: ScheduleId,
) -> ScheduleResponse:
    note = f"unpaused by {principal.subject}"
    return await _schedule(database, client, tenant, scheduleId, lambda h: h.unpause(note=note))


@router.post(
    "/schedules/{scheduleId}/trigger",
    status_code=202,
    operation_id="triggerSchedule",
    summary="Fire a schedule now (its overlap policy still applies)",
    response_model_exclude_none=True,
    responses=documented(400, 401, 403, 404, 503),
)
async def trigger_schedule(
    principal: Operator,
    tenant: Tenant,
    database: DatabaseDep,
    client: TemporalClient,
    scheduleId: ScheduleId,
) -> ScheduleResponse:
    return await _schedule(database, client, tenant, scheduleId, lambda h: h.trigger())


@router.delete(
    "/schedules/{scheduleId}",
    status_code=204,
    operation_id="deleteSchedule",
    summary="Delete a schedule (runs it started go on)",
    responses=documented(400, 401, 403, 404, 503),
)
async def delete_schedule(
    principal: Operator,
    tenant: Tenant,
    database: DatabaseDep,
    client: TemporalClient,
    scheduleId: ScheduleId,
) -> Response:
    await _row(database, tenant, scheduleId)
    try:
        await _handle(client, tenant, scheduleId).delete()
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
    with available():
        await database.schedules.remove(tenant, scheduleId)
    return Response(status_code=204)
