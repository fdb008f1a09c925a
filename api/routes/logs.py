"""Logs: a run's log as NDJSON, one RunLogEntry per line; `?after=` resumes, `?follow=true` keeps
the stream open until the run ends or the client leaves.

A followed stream that ends cleanly means the run ended: every other end is said on a last line
of its own, `{"error": {"code", "message", "traceId", "resumeAfter"}}`, which no log entry
looks like: the API shutting down (`shutting_down`), or the run unreadable for longer than
`STREAM_GIVE_UP_SECONDS` (`temporal_unavailable`). A client resumes with `?after=resumeAfter`.
A run that cannot be read for a moment (a worker killed, a query that timed out) is asked again
within the stream, with backoff; nothing is skipped or repeated, as sequences are gap-free.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated

import structlog
from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from api.deps import RunId, Runs, ServicesDep, SettingsDep, Tenant, Viewer
from api.errors import ApiError, InternalError, TemporalUnavailable, documented
from api.gateway import LOGS_PAGE, RunGateway, transient
from api.routes import PREFIX
from api.schemas import RunLogEntry, log_entry
from api.tracing import trace_id
from workflows.contract.state import LogsPage

router = APIRouter(prefix=PREFIX, tags=["Logs"])
log = structlog.get_logger("taskrunner.api")

STREAM_GIVE_UP_SECONDS = 120.0
"""A followed run unreadable this long (no worker, no server) ends its stream with an error."""
RETRY_MAX_SECONDS = 5.0


class NdjsonResponse(StreamingResponse):
    media_type = "application/x-ndjson"


@router.get(
    "/runs/{runId}/logs",
    operation_id="streamRunLogs",
    summary="Stream run logs",
    description=(
        "NDJSON, one RunLogEntry per line. With `follow=true` the stream stays open until the run "
        'ends; any other end is a last line `{"error": {"code", "message", '
        '"resumeAfter"}}` (the API shutting down, or the run unreadable for minutes): '
        "resume with `after=resumeAfter`."
    ),
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
    services: ServicesDep,
    after: Annotated[int, Query(ge=0, description="Only entries with a larger sequence")] = 0,
    follow: Annotated[bool, Query(description="Keep streaming until the run ends")] = False,
) -> NdjsonResponse:
    # The first page is read before the response starts, so an unknown run is still a 404.
    first = await runs.logs(tenant, runId, after)
    stream = Stream(runs, tenant, runId, settings.logs_poll_seconds, services.stopping)
    return NdjsonResponse(stream.lines(first, follow))


class Stream:
    """One log stream: pages of entries, and, when following, waits between them."""

    def __init__(
        self,
        runs: RunGateway,
        tenant: str,
        run_id: str,
        poll: float,
        stopping: asyncio.Event,
    ) -> None:
        self.runs = runs
        self.tenant = tenant
        self.run_id = run_id
        self.poll = poll
        self.stopping = stopping

    async def lines(self, page: LogsPage, follow: bool) -> AsyncIterator[str]:
        failing_since: float | None = None
        delay = self.poll
        while True:
            for entry in page.entries:
                yield log_entry(entry).model_dump_json(exclude_none=True) + "\n"
            after = page.nextSequence
            if len(page.entries) < LOGS_PAGE:  # caught up
                if page.finished or not follow:
                    return
                if await self._stopped_within(self.poll):
                    yield self._final("shutting_down", "The API is shutting down.", after)
                    return
            try:
                page = await self.runs.logs(self.tenant, self.run_id, after)
                failing_since, delay = None, self.poll
            except Exception as exc:
                error = exc if isinstance(exc, ApiError) else None
                if not transient(exc):
                    yield self._final_error(error or InternalError(), after)
                    return
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > STREAM_GIVE_UP_SECONDS:
                    yield self._final_error(
                        error or TemporalUnavailable(f"the run cannot be read: {exc}"), after
                    )
                    return
                log.info("logs.read-retried", run_id=self.run_id, error=str(exc)[:200])
                if await self._stopped_within(delay):
                    yield self._final("shutting_down", "The API is shutting down.", after)
                    return
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                page = LogsPage(entries=[], nextSequence=after, finished=False)

    async def _stopped_within(self, seconds: float) -> bool:
        """Sleep `seconds`, or less if the API starts shutting down; whether it did."""
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def _final_error(self, error: ApiError, after: int) -> str:
        log.warning("logs.stream-ended", run_id=self.run_id, error=error.message[:200])
        return self._final(error.code, error.message, after)

    def _final(self, code: str, message: str, after: int) -> str:
        body = {"code": code, "message": message, "traceId": trace_id(), "resumeAfter": after}
        return json.dumps({"error": body}) + "\n"
