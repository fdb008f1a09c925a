"""Health: liveness, readiness (Temporal and the database reachable) and Prometheus metrics. No
token needed, except for metrics labelled by tenant (see `metrics`)."""

from __future__ import annotations

import structlog
from fastapi import APIRouter, Request, Response
from fastapi.security.utils import get_authorization_scheme_param

from api.auth import METRICS
from api.deps import ServicesDep
from api.errors import DatabaseUnavailable, InsufficientScope, TemporalUnavailable
from api.metrics import CONTENT_TYPE
from api.queue import runs_in_flight, task_queue_health
from api.schemas import HealthStatus

log = structlog.get_logger("taskrunner.api")

router = APIRouter(tags=["Health"])


@router.get(
    "/healthz",
    operation_id="getLiveness",
    summary="The process is up",
    response_model_exclude_none=True,
)
async def healthz() -> HealthStatus:
    return HealthStatus(status="ok")


@router.get(
    "/readyz",
    operation_id="getReadiness",
    summary="Temporal and the database are reachable; the task queue's backlog and pollers",
    response_model_exclude_none=True,
    responses={503: {"description": "Temporal or the database is not reachable"}},
)
async def readyz(services: ServicesDep) -> HealthStatus:
    """Ready when Temporal and the database answer. The runs' task queue is reported beside:
    its backlog (tasks no worker has picked up yet, and the oldest one's age) and how many
    workers poll it; no worker is a warning, not unreadiness (the API still serves reads)."""
    # No token is needed here: the answer says what is out of reach, never where it lives (an
    # address, a database URL's host and user); the API's log has the details.
    problem = await services.temporal.ready()
    if problem is not None:
        log.warning("readyz.temporal-unavailable", problem=problem)
        raise TemporalUnavailable("Temporal is not reachable (the API's log says why)")
    problem = await services.database.ready()
    if problem is not None:
        log.warning("readyz.database-unavailable", problem=problem)
        raise DatabaseUnavailable("the database is not reachable (the API's log says why)")
    name = services.settings.task_queue
    try:
        client = await services.temporal.client()
        queue = await services.queue_health.get(lambda: task_queue_health(client, name))
    except Exception as exc:  # the queue's figures are a report, never a reason to be unready
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        log.warning("readyz.task-queue-undescribed", task_queue=name, error=reason)
        return HealthStatus(
            status="ready",
            warnings=[f"task queue {name!r} could not be described (the API's log says why)"],
        )
    warnings = [
        f"no worker polls task queue {name!r} for {what}: runs do not move"
        for what, kind in (
            ("workflow tasks", queue.workflowTasks),
            ("activity tasks", queue.activityTasks),
        )
        if kind.pollers == 0
    ]
    return HealthStatus(status="ready", taskQueue=queue, warnings=warnings or None)


@router.get(
    "/metrics",
    operation_id="getMetrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"}},
)
async def metrics(services: ServicesDep, request: Request) -> Response:
    """Open to any scraper while it names no tenant (the default). Labelled by tenant
    (TASKRUNNER_METRICS_TENANT_LABELS=true) with auth on, it names every tenant, so it needs a
    token holding `taskrunner.metrics` (a scraper's: it opens nothing else) or a platform
    admin's (`*` with taskrunner.admin)."""
    if services.metrics.tenant_labels and services.auth.enabled:
        scheme, token = get_authorization_scheme_param(request.headers.get("authorization"))
        principal = services.auth.authenticate(token if scheme.lower() == "bearer" else None)
        if not (METRICS in principal.scopes or principal.all_tenants):
            raise InsufficientScope(
                METRICS,
                f"metrics labelled by tenant need the {METRICS} scope or a platform admin's token",
            )
    try:
        client = await services.temporal.client()
        counts: dict[str, int] | None = await services.runs_in_flight.get(
            lambda: runs_in_flight(client, services.settings.task_queue)
        )
    except Exception as exc:  # the API's own metrics are served whatever Temporal does
        log.warning("metrics.in-flight-unavailable", error=str(exc).splitlines()[0][:200])
        counts = None
    services.metrics.in_flight(counts)
    return Response(services.metrics.render(), media_type=CONTENT_TYPE)
