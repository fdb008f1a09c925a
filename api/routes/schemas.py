"""The manifest's JSON Schema, for editors and CI linters: public, as the manifest format is.

Generated from the compiler's models (compiler/schema.py), with this service's executors'
parameters as the `with` of the steps that use them: the same schema `taskrunner schema` prints
beside the same executors, and schema/taskpack.schema.json holds for the builtins. Point
yaml-language-server at it with `# yaml-language-server: $schema=https://HOST/schemas/taskpack.json`
on a pack's first line.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, FastAPI, Header, Request, Response

from api.deps import ServicesDep
from compiler.executors import ExecutorCatalog
from compiler.schema import SCHEMA_PATH, manifest_schema_text

router = APIRouter(tags=["Metadata"])

MEDIA_TYPE = "application/schema+json"


def _body(app: FastAPI, executors: ExecutorCatalog | None) -> tuple[bytes, str]:
    """The schema with this service's executors (what its compiler checks `with` against),
    made once per app."""
    cached: tuple[bytes, str] | None = getattr(app.state, "taskpack_schema", None)
    if cached is None:
        body = manifest_schema_text(executors).encode()
        cached = body, f'"{hashlib.sha256(body).hexdigest()[:32]}"'
        app.state.taskpack_schema = cached
    return cached


@router.get(
    SCHEMA_PATH,
    operation_id="getTaskPackSchema",
    summary="The task pack manifest's JSON Schema (draft 2020-12)",
    description="No token needed. Editors that speak JSON Schema (yaml-language-server) "
    "complete and check packs against it; the service's compiler checks more than a schema can "
    "(ids that must exist, expressions, executors' parameters).",
    response_class=Response,
    responses={
        200: {
            "content": {MEDIA_TYPE: {"schema": {"type": "object"}}},
            "description": "The schema",
            "headers": {"ETag": {"description": "Schema version", "schema": {"type": "string"}}},
        },
        304: {"description": "The schema has not changed since the ETag given in If-None-Match"},
    },
)
async def get_task_pack_schema(
    request: Request,
    services: ServicesDep,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    body, etag = _body(request.app, services.executors)
    # A service upgrade may change it: caches ask again after an hour, cheaply with the ETag.
    headers = {"ETag": etag, "Cache-Control": "public, max-age=3600"}
    tags = [t.strip().removeprefix("W/") for t in (if_none_match or "").split(",")]
    if etag in tags or "*" in tags:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=MEDIA_TYPE, headers=headers)
