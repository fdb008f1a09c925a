"""Metadata: where the OpenAPI document is, with an ETag and a digest to verify it by.

The document is the app's own (FastAPI's, served at `specUrl`); `signature` is the SHA-256 of
exactly the bytes served there, and the ETag is derived from it, so a client can cache the
document and check what it fetched.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

from fastapi import APIRouter, FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse

from api.errors import documented
from api.schemas import OpenApiMetadata

router = APIRouter(tags=["Metadata"])


@dataclass(frozen=True)
class SpecDigest:
    etag: str
    signature: str


def spec_digest(app: FastAPI) -> SpecDigest:
    cached: SpecDigest | None = getattr(app.state, "spec_digest", None)
    if cached is None:
        # The same rendering FastAPI's openapi route uses, so the digest matches what it serves.
        body = JSONResponse(app.openapi()).body
        digest = hashlib.sha256(body).hexdigest()
        cached = SpecDigest(etag=f'"{digest[:32]}"', signature=f"sha256:{digest}")
        app.state.spec_digest = cached
    return cached


def build_version() -> str:
    try:
        return version("taskrunner")
    except PackageNotFoundError:
        return "unknown"


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


@router.get(
    "/.well-known/openapi",
    operation_id="getOpenApiMetadata",
    summary="Get OpenAPI metadata",
    responses={
        200: {
            "model": OpenApiMetadata,
            "description": "OpenAPI metadata",
            "headers": {
                "ETag": {"description": "Spec version ETag", "schema": {"type": "string"}},
                "X-Signature": {
                    "description": "A digest, not a signature: `sha256:` and the hex SHA-256 "
                    "of the bytes served at specUrl (the contract's name for the header)",
                    "schema": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"},
                },
            },
        },
        304: {"description": "The spec has not changed since the ETag given in If-None-Match"},
        **documented(),
    },
)
async def get_openapi_metadata(
    request: Request,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    app: FastAPI = request.app
    digest = spec_digest(app)
    headers = {"ETag": digest.etag, "X-Signature": digest.signature}
    if _matches(if_none_match, digest.etag):
        return Response(status_code=304, headers=headers)
    body = OpenApiMetadata(
        specUrl=app.openapi_url or "",
        version=app.version,
        buildVersion=build_version(),
        etag=digest.etag,
        signature=digest.signature,
    )
    return JSONResponse(body.model_dump(), headers=headers)
