"""Health: liveness, readiness (Temporal and the database reachable) and Prometheus metrics. No
token needed, except for metrics labelled by tenant (see `metrics`)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.security.utils import get_authorization_scheme_param

from api.auth import METRICS
from api.deps import ServicesDep
from api.errors import DatabaseUnavailable, InsufficientScope, TemporalUnavailable
from api.metrics import CONTENT_TYPE
from api.schemas import HealthStatus

router = APIRouter(tags=["Health"])


@router.get("/healthz", operation_id="getLiveness", summary="The process is up")
async def healthz() -> HealthStatus:
    return HealthStatus(status="ok")


@router.get(
    "/readyz",
    operation_id="getReadiness",
    summary="Temporal and the database are reachable",
    responses={503: {"description": "Temporal or the database is not reachable"}},
)
async def readyz(services: ServicesDep) -> HealthStatus:
    problem = await services.temporal.ready()
    if problem is not None:
        raise TemporalUnavailable(problem)
    problem = await services.database.ready()
    if problem is not None:
        raise DatabaseUnavailable(problem)
    return HealthStatus(status="ready")


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
    return Response(services.metrics.render(), media_type=CONTENT_TYPE)
