"""Health: liveness, readiness (Temporal reachable) and Prometheus metrics. No token needed."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import ServicesDep
from api.errors import TemporalUnavailable
from api.metrics import CONTENT_TYPE
from api.schemas import HealthStatus

router = APIRouter(tags=["Health"])


@router.get("/healthz", operation_id="getLiveness", summary="The process is up")
async def healthz() -> HealthStatus:
    return HealthStatus(status="ok")


@router.get(
    "/readyz",
    operation_id="getReadiness",
    summary="Temporal is reachable",
    responses={503: {"description": "Temporal is not reachable"}},
)
async def readyz(services: ServicesDep) -> HealthStatus:
    problem = await services.temporal.ready()
    if problem is not None:
        raise TemporalUnavailable(problem)
    return HealthStatus(status="ready")


@router.get(
    "/metrics",
    operation_id="getMetrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"}},
)
async def metrics(services: ServicesDep) -> Response:
    return Response(services.metrics.render(), media_type=CONTENT_TYPE)
