"""Simulations: compile a manifest with its inputs and say what a run would do, running nothing."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from api.deps import CompileDep, DatabaseDep, Tenant, Viewer
from api.errors import documented
from api.routes import PREFIX
from api.routes.packs import manifest_source
from api.schemas import SimulationRequest, SimulationResponse
from compiler.simulation import simulate

router = APIRouter(prefix=PREFIX, tags=["Simulations"])


@router.post(
    "/simulations",
    operation_id="simulateTaskPack",
    summary="Simulate a task pack",
    response_model_exclude_none=True,
    responses=documented(400, 401, 403, 413, plan_errors=True),
)
async def simulate_task_pack(
    principal: Viewer,
    tenant: Tenant,
    compile_pack: CompileDep,
    database: DatabaseDep,
    body: SimulationRequest,
) -> SimulationResponse:
    manifest, _ = await manifest_source(database, tenant, body.manifest, body.pack)
    # Compiling a large manifest is CPU work: off the event loop.
    compiled = await run_in_threadpool(compile_pack, manifest, body.inputs)
    result = await run_in_threadpool(simulate, compiled.plan, compiled.plan_hash)
    return SimulationResponse.model_validate(result)
