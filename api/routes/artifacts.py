"""Artifacts: what a run captured, and the captured files themselves."""

from __future__ import annotations

import mimetypes

from fastapi import APIRouter
from fastapi.responses import FileResponse

from api.deps import RunId, Runs, SettingsDep, Tenant, Viewer
from api.errors import ArtifactNotFound, documented
from api.routes import PREFIX
from api.schemas import RunArtifact
from workflows.contract.artifacts import stored_file

router = APIRouter(prefix=PREFIX, tags=["Artifacts"])


@router.get(
    "/runs/{runId}/artifacts",
    operation_id="listRunArtifacts",
    summary="List run artifacts",
    response_model_exclude_none=True,
    responses=documented(400, 401, 403, 404, 503),
)
async def list_run_artifacts(
    principal: Viewer, tenant: Tenant, runId: RunId, runs: Runs
) -> list[RunArtifact]:
    return await runs.artifacts(tenant, runId)


@router.get(
    "/runs/{runId}/artifacts/{name}",
    operation_id="downloadRunArtifact",
    summary="Download a captured file artifact",
    response_class=FileResponse,
    responses={
        200: {"description": "The file", "content": {"application/octet-stream": {}}},
        **documented(400, 401, 403, 404, 503),
    },
)
async def download_run_artifact(
    principal: Viewer, tenant: Tenant, runId: RunId, name: str, runs: Runs, settings: SettingsDep
) -> FileResponse:
    records = await runs.artifacts(tenant, runId)
    # Only a file the run itself recorded as captured is served, never a name from the URL alone.
    record = next(
        (
            r
            for r in reversed(records)
            if r.name == name and r.type == "file" and r.status == "captured" and r.storedPath
        ),
        None,
    )
    missing = ArtifactNotFound(f"run {runId!r} has no captured file artifact {name!r}")
    if record is None or record.storedPath is None:
        raise missing
    path = stored_file(settings.data_dir, tenant, runId, record.storedPath)
    if path is None:
        raise missing
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type, filename=name)
