"""Redrive: start a new run of a failed or cancelled run that takes over what already succeeded.

`POST /runs/{runId}/redrive` `{fromStep?, inputs?, pack?: {version}, runId?}`; `?dryRun=true`
answers what would happen and starts nothing. What is reused and which gates lapse is decided in
api/redrive.py. Changing inputs or the pack version recompiles the pack's manifest, so it needs a
run of a registered pack (the registry keeps the manifest); a run from a posted manifest can be
redriven as it was.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from api import errors
from api.actions import REDRIVABLE
from api.auth import OPERATOR
from api.database import available
from api.deps import CompileDep, DatabaseDep, Operator, RunId, Runs, SettingsDep, Tenant
from api.errors import documented
from api.idempotency import REPLAY_HEADER, Claim, IdempotentRoute, idempotent
from api.redrive import RedrivePointError, decide
from api.routes import PREFIX
from api.routes.packs import resolve_pack
from api.routes.runs import LOCATION, new_run_id, reserve_run_id, run_location, tenant_webhooks
from api.schemas import PackRef, RedrivePreview, RedriveRequest, RunStateResponse, run_state
from compiler import CompiledPlan, ErrorDetail, ManifestError

router = APIRouter(prefix=PREFIX, tags=["Runs"], route_class=IdempotentRoute)
IdempotentRedrive = Annotated[Claim | None, idempotent(OPERATOR, reserve=reserve_run_id)]


@router.post(
    "/runs/{runId}/redrive",
    status_code=201,
    operation_id="redrivePackRun",
    summary="Redrive a failed or cancelled run: a new run that reuses what succeeded",
    response_model_exclude_none=True,
    responses={
        201: LOCATION,
        200: {"model": RedrivePreview, "description": "dryRun: what would happen"},
        **documented(400, 401, 403, 404, 409, 503, plan_errors=True),
    },
)
async def redrive_pack_run(
    principal: Operator,
    idempotency: IdempotentRedrive,
    tenant: Tenant,
    runId: RunId,
    body: RedriveRequest,
    runs: Runs,
    database: DatabaseDep,
    settings: SettingsDep,
    compile_pack: CompileDep,
    response: Response,
    dryRun: Annotated[bool, Query(description="Say what would happen; start nothing")] = False,
) -> RunStateResponse | RedrivePreview:
    old_input = await runs.run_input(tenant, runId)
    old = await runs.state_with_outputs(tenant, runId)
    if old.status not in REDRIVABLE:
        raise errors.RunNotRedrivable(
            f"run {runId!r} is {old.status}: only a failed or cancelled run can be redriven"
        )
    digest = old_input.meta.packDigest
    if body.inputs is None and body.pack is None:
        compiled = CompiledPlan(plan=old_input.plan, plan_hash=old_input.planHash)
    else:
        if digest is None:
            raise errors.InvalidRedrive(
                f"run {runId!r} was started from a posted manifest, which the service does not "
                "keep: changing its inputs or pack version needs a run of a registered pack"
            )
        pack = old_input.plan.pack
        version = body.pack.version if body.pack else pack.version
        record = await resolve_pack(database, tenant, PackRef(name=pack.name, version=version))
        inputs = {**old_input.plan.inputs, **(body.inputs or {})}
        compiled = await run_in_threadpool(compile_pack, record.manifest, inputs)
        digest = record.digest
    try:
        decision = decide(old, compiled.plan, compiled.plan_hash, body.fromStep)
    except RedrivePointError as exc:
        raise ManifestError([ErrorDetail("fromStep", str(exc))]) from None
    if dryRun:
        response.status_code = 200
        return RedrivePreview.model_validate(decision.preview(old.planHash, compiled.plan_hash))

    claim = idempotency
    # Under an Idempotency-Key the new run's id was fixed with the key's claim, before the start.
    run_id = (claim.run_id if claim else None) or body.runId or new_run_id()
    token = claim.token if claim else None
    try:
        snapshot = await runs.start(
            compiled,
            tenant=tenant,
            run_id=run_id,
            actor=principal.subject,
            webhooks=await tenant_webhooks(database, tenant),
            request_token=token,
            pack_digest=digest,
            redrive=decision.redrive,
        )
    except errors.RunAlreadyExists:
        # A retry whose first attempt started the redrive but lost its answer: that run it is.
        if token is None or not await runs.started_by(tenant, run_id, token):
            raise
        snapshot = (await runs.state(tenant, run_id)).snapshot
        response.headers[REPLAY_HEADER] = "true"
    with available():
        await database.redrives.add(tenant, runId, run_id)
    response.headers["Location"] = run_location(settings, run_id)
    return run_state(snapshot)
