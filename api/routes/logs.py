"""Logs: a run's log as NDJSON, one RunLogEntry per line; `?after=` resumes, `?follow=true` keeps
the stream open until the run ends or the client leaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

import structlog
from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from api.deps import RunId, Runs, SettingsDep, Tenant, Viewer
from api.errors import documented
from api.gateway import LOGS_PAGE, RunGateway
from api.routes import PREFIX
from api.schemas import RunLogEntry, log_entry
from workflows.contract.state import LogsPage

router = APIRouter(prefix=PREFIX, tags=["Logs"])
log = structlog.get_logger("taskrunner.api")


class NdjsonResponse(StreamingResponse):
    media_type = "application/x-ndjson"


@router.get(
    "/runs/{runId}/logs",
    operation_id="streamRunLogs",
    summary="Stream run logs",
    response_class=NdjsonResponse,
    responses={
        200: {"model": RunLogEntry, "description": "Log stream: one RunLogEntry per line"},
        **documented(400, 401, 403, 404, 503, stream=True),
    },
)
async def stream_run_logs(
    principal: Viewer,
    tenant: Tenant,
    runId: RunId,
    runs: Runs,
    settings: SettingsDep,
    after: Annotated[int, Query(ge=0, description="Only entries with a larger sequence")] = 0,
    follow: Annotated[bool, Query(description="Keep streaming until the run ends")] = False,
) -> NdjsonResponse:
    # The first page is read before the response starts, so an unknown run is still a 404.
    first = await runs.logs(tenant, runId, after)
    return NdjsonResponse(_lines(runs, tenant, runId, first, follow, settings.logs_poll_seconds))


async def _lines(
    runs: RunGateway, tenant: str, run_id: str, page: LogsPage, follow: bool, poll: float
) -> AsyncIterator[str]:
    try:
        while True:
            for entry in page.entries:
                yield log_entry(entry).model_dump_json(exclude_none=True) + "\n"
            if len(page.entries) < LOGS_PAGE:  # caught up
                if page.finished or not follow:
                    return
                await asyncio.sleep(poll)
            page = await runs.logs(tenant, run_id, page.nextSequence)
    except Exception as exc:  # the status line is sent: all that is left is to end the stream
        log.warning("logs.stream-ended", run_id=run_id, error=str(exc)[:200])
