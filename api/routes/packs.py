"""The pack registry: publish a pack version, list and read versions, disable and enable them.

Versions are the tenant's and immutable: the same name@version with other content is a 409, the
same content again answers the existing record (200). Publishing, disabling and enabling take
`taskrunner.admin`; reading takes `taskrunner.viewer`. A disabled version starts no new run
(409 `pack_disabled`); runs in flight go on. Runs and simulations name a pack with
`"pack": {"name", "version"?}` (see `resolve_pack`).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from starlette.concurrency import run_in_threadpool

from api import errors
from api.database import ApiDatabase, available
from api.deps import (
    Admin,
    Compile,
    CompileDep,
    DatabaseDep,
    ServicesDep,
    SettingsDep,
    Tenant,
    Viewer,
)
from api.errors import documented
from api.listing import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from api.pack_signing import PackSignatureInvalid, load_trusted_keys, verify_pack
from api.routes import PREFIX
from api.schemas import (
    PackList,
    PackRef,
    PackVersionDetail,
    PackVersionRecord,
    PublishPackRequest,
)
from compiler import ManifestError, load_manifest
from db.packs import PackRecord, PackStatus, PackVersionExists
from workflows.contract.times import rfc3339

router = APIRouter(prefix=PREFIX, tags=["Packs"])

PackName = Annotated[str, Path(min_length=1, max_length=200)]
PackVersion = Annotated[str, Path(min_length=1, max_length=100)]


def digest_of(manifest: str) -> str:
    return "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()


def record_schema(record: PackRecord) -> PackVersionRecord:
    return PackVersionRecord(
        name=record.name,
        version=record.version,
        digest=record.digest,
        publishedAt=rfc3339(record.published_at),
        publishedBy=record.published_by,
        status=record.status,
        signedBy=record.signed_by,
    )


def _check_manifest(compile_pack: Compile, text: str) -> tuple[str, str]:
    """name and version of a valid manifest; ManifestError (a 400 with paths) otherwise.

    Checked as a run would compile it (ceilings, executor parameters), but inputs are not known
    at publish time: a required input nobody gave yet is no error.
    """
    try:
        compile_pack(text, None)
    except ManifestError as exc:
        errors_left = [e for e in exc.errors if not e.path.startswith("inputs.")]
        if errors_left:
            raise ManifestError(errors_left) from None
    # Compiled (every error found in one pass) before this, which stops at the first kind.
    manifest = load_manifest(text)
    return manifest.metadata.name, manifest.metadata.version


@router.post(
    "/packs",
    status_code=201,
    operation_id="publishPack",
    summary="Publish a pack version (name@version from its metadata)",
    response_model_exclude_none=True,
    responses={
        200: {"model": PackVersionRecord, "description": "Published before, same content"},
        **documented(400, 401, 403, 409, 413, 503, plan_errors=True),
    },
)
async def publish_pack(
    principal: Admin,
    tenant: Tenant,
    settings: SettingsDep,
    database: DatabaseDep,
    compile_pack: CompileDep,
    body: PublishPackRequest,
    response: Response,
) -> PackVersionRecord:
    name, version = await run_in_threadpool(partial(_check_manifest, compile_pack, body.manifest))
    signed_by: str | None = None
    if body.signature is not None:
        try:
            trusted = load_trusted_keys(settings.pack_trusted_keys_file)
            signed_by = verify_pack(body.signature, body.manifest.encode(), trusted)
        except PackSignatureInvalid as exc:
            raise errors.InvalidPackSignature(str(exc)) from None
    elif settings.pack_require_signatures:
        raise errors.InvalidPackSignature(
            "this service requires signed packs: publish with a `signature` (a DSSE envelope)"
        )
    record = PackRecord(
        tenant=tenant,
        name=name,
        version=version,
        digest=digest_of(body.manifest),
        manifest=body.manifest,
        status="active",
        published_at=datetime.now(UTC),
        published_by=principal.subject,
        signature=body.signature,
        signed_by=signed_by,
    )
    try:
        with available():
            stored, new = await database.packs.publish(record)
    except PackVersionExists as exc:
        raise errors.PackVersionExistsError(str(exc)) from None
    if not new:
        response.status_code = 200
    return record_schema(stored)


@router.get(
    "/packs",
    operation_id="listPacks",
    summary="List published pack versions (by name, then version, highest first)",
    response_model_exclude_none=True,
    responses=documented(400, 401, 403, 503),
)
async def list_packs(
    principal: Viewer,
    tenant: Tenant,
    services: ServicesDep,
    database: DatabaseDep,
    name: Annotated[str | None, Query(max_length=200, description="Only this pack")] = None,
    pageSize: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    pageToken: Annotated[
        str | None, Query(max_length=4096, description="`nextPageToken` of the previous page")
    ] = None,
) -> PackList:
    query = f"packs\0{tenant}\0{name or ''}"
    with available():
        records = await database.packs.versions(tenant, name)
    start = 0
    if pageToken:
        # Keyset: the token names the last version of the previous page (versions are never
        # deleted, so it is always found again, and a version published since is not skipped).
        after = json.loads(services.page_tokens.accept(query, pageToken))
        keys = [[r.name, r.version] for r in records]
        start = keys.index(after) + 1 if after in keys else len(records)
    page = records[start : start + pageSize]
    next_token = None
    if start + pageSize < len(records):
        last = page[-1]
        next_token = services.page_tokens.issue(
            query, json.dumps([last.name, last.version]).encode()
        )
    return PackList(packs=[record_schema(r) for r in page], nextPageToken=next_token)


@router.get(
    "/packs/{name}/versions/{version}",
    operation_id="getPackVersion",
    summary="A pack version: its record and manifest",
    response_model_exclude_none=True,
    responses=documented(400, 401, 403, 404, 503),
)
async def get_pack_version(
    principal: Viewer, tenant: Tenant, database: DatabaseDep, name: PackName, version: PackVersion
) -> PackVersionDetail:
    with available():
        record = await database.packs.get(tenant, name, version)
    if record is None:
        raise errors.PackNotFound(f"no pack {name}@{version}")
    return PackVersionDetail(**record_schema(record).model_dump(), manifest=record.manifest)


async def _set_status(
    database: ApiDatabase, tenant: str, name: str, version: str, status: PackStatus, actor: str
) -> PackVersionRecord:
    with available():
        record = await database.packs.set_status(tenant, name, version, status, actor)
    if record is None:
        raise errors.PackNotFound(f"no pack {name}@{version}")
    return record_schema(record)


@router.post(
    "/packs/{name}/versions/{version}/disable",
    operation_id="disablePackVersion",
    summary="Disable a version: it starts no new run (runs in flight go on)",
    response_model_exclude_none=True,
    responses=documented(400, 401, 403, 404, 503),
)
async def disable_pack_version(
    principal: Admin, tenant: Tenant, database: DatabaseDep, name: PackName, version: PackVersion
) -> PackVersionRecord:
    return await _set_status(database, tenant, name, version, "disabled", principal.subject)


@router.post(
    "/packs/{name}/versions/{version}/enable",
    operation_id="enablePackVersion",
    summary="Enable a disabled version again",
    response_model_exclude_none=True,
    responses=documented(400, 401, 403, 404, 503),
)
async def enable_pack_version(
    principal: Admin, tenant: Tenant, database: DatabaseDep, name: PackName, version: PackVersion
) -> PackVersionRecord:
    return await _set_status(database, tenant, name, version, "active", principal.subject)


async def resolve_pack(database: ApiDatabase, tenant: str, ref: PackRef) -> PackRecord:
    """The version a run or simulation of `ref` uses: the one named, or the highest active one.
    404 `pack_not_found` when there is none; 409 `pack_disabled` for a disabled version."""
    with available():
        if ref.version is None:
            record = await database.packs.highest_active(tenant, ref.name)
            if record is None:
                raise errors.PackNotFound(f"no active version of pack {ref.name!r}")
            return record
        record = await database.packs.get(tenant, ref.name, ref.version)
    if record is None:
        raise errors.PackNotFound(f"no pack {ref.name}@{ref.version}")
    if record.status == "disabled":
        raise errors.PackDisabled(f"{ref.name}@{ref.version} is disabled: it starts no new run")
    return record


async def manifest_source(
    database: ApiDatabase, tenant: str, manifest: str | None, pack: PackRef | None
) -> tuple[str, str | None]:
    """The manifest a run or simulation compiles, and the registered version's digest if any.
    The request model makes sure exactly one of `manifest` and `pack` is given."""
    if pack is None:
        assert manifest is not None
        return manifest, None
    record = await resolve_pack(database, tenant, pack)
    return record.manifest, record.digest
