"""Dependencies as `Annotated` aliases: what a route declares it needs, nothing built per import.

`Services` holds what `create_app` built once (settings, the Temporal connection, metrics, the
authenticator); the aliases hand out pieces of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Annotated, Any, cast

from fastapi import Depends, Header, Path, Request, Security
from fastapi.openapi.models import OAuthFlowClientCredentials, OAuthFlows
from fastapi.security import OAuth2
from fastapi.security.utils import get_authorization_scheme_param
from temporalio.client import Client

from api.auth import (
    ADMIN,
    OPERATOR,
    ROLE_DESCRIPTIONS,
    TENANT_HEADER,
    VIEWER,
    Authenticator,
    Principal,
    require_scope,
)
from api.database import ApiDatabase
from api.errors import InvalidTenant
from api.gateway import RunGateway
from api.link_refusals import RefusedLinks
from api.listing import PageTokens
from api.metrics import Metrics
from api.middleware import PARSED_BODY
from api.queue import Recent
from api.reads import StateReads
from api.schemas import MAX_RUN_ID_LENGTH, RUN_ID_PATTERN, TaskQueueHealth
from api.settings import ApiSettings
from api.temporal import TemporalConnection
from compiler import compile_manifest
from compiler.compile import CompiledPlan
from compiler.executors import ExecutorCatalog
from workflows.contract.service_key import ServiceKey


@dataclass(frozen=True)
class Services:
    settings: ApiSettings
    temporal: TemporalConnection
    database: ApiDatabase
    metrics: Metrics
    auth: Authenticator
    reads: StateReads = field(default_factory=StateReads)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the server starts shutting down: open log streams end (see api.app.stop_streams)."""
    page_tokens: PageTokens = field(default_factory=lambda: PageTokens(None))
    service_key: ServiceKey | None = None
    """The Ed25519 key evidence bundles are signed with (workflows.contract.service_key)."""
    refused_links: RefusedLinks = field(default_factory=RefusedLinks)
    """Approval links the runs refused for good: their repeats are answered here."""
    queue_health: Recent[TaskQueueHealth] = field(default_factory=Recent)
    """/readyz's figures of the task queue, shared by close callers (api.queue.Recent)."""
    runs_in_flight: Recent[dict[str, int]] = field(default_factory=Recent)
    """/metrics' counts of open runs, shared by close scrapes."""
    executors: ExecutorCatalog | None = None
    """The executors the service runs, with their parameter schemas: packs are checked
    against it at compile time (None: not checked, an unknown executor fails when it runs)."""


async def _services(request: Request) -> Services:
    return cast(Services, request.app.state.services)


ServicesDep = Annotated[Services, Depends(_services)]


async def _settings(services: ServicesDep) -> ApiSettings:
    return services.settings


SettingsDep = Annotated[ApiSettings, Depends(_settings)]

Compile = Callable[[str, Mapping[str, Any] | None], CompiledPlan]


async def _compiler(services: ServicesDep) -> Compile:
    """`compile_manifest` with the operator's ceilings and the service's executor catalog."""
    return partial(
        compile_manifest,
        ceilings=services.settings.ceilings(),
        known_executors=services.executors,
    )


CompileDep = Annotated[Compile, Depends(_compiler)]


def signing_key(settings: ApiSettings) -> bytes | None:
    """The signing key as bytes (its UTF-8), as the workers' webhook activity takes it too."""
    return settings.signing_key.encode() if settings.signing_key else None


async def _client(services: ServicesDep) -> Client:
    return await services.temporal.client()


TemporalClient = Annotated[Client, Depends(_client)]


async def _runs(client: TemporalClient, services: ServicesDep) -> RunGateway:
    return RunGateway(client, services.settings, services.metrics, services.reads)


Runs = Annotated[RunGateway, Depends(_runs)]


async def _database(services: ServicesDep) -> ApiDatabase:
    return services.database


DatabaseDep = Annotated[ApiDatabase, Depends(_database)]


RunId = Annotated[
    str,
    Path(pattern=RUN_ID_PATTERN, max_length=MAX_RUN_ID_LENGTH, description="Unique run identifier"),
]

# ----------------------------------------------------------------- auth

OAUTH2 = "oauth2"
"""The security scheme's name in the OpenAPI document, the contract's."""

# The contract's scheme: bearer tokens from an OAuth2 client-credentials flow, whose scopes are the
# roles. The API only verifies tokens (api.auth); `api.openapi` puts the operator's token URL
# (TASKRUNNER_OAUTH_TOKEN_URL) in the served document and each route's scopes on its operation.
_oauth2 = OAuth2(
    flows=OAuthFlows(
        clientCredentials=OAuthFlowClientCredentials(
            tokenUrl=ApiSettings.model_fields["oauth_token_url"].default,
            scopes=dict(ROLE_DESCRIPTIONS),
        )
    ),
    scheme_name=OAUTH2,
    auto_error=False,
)


async def _principal(
    request: Request, services: ServicesDep, authorization: Annotated[str | None, Depends(_oauth2)]
) -> Principal:
    # FastAPI calls this once per set of scopes a route's dependencies ask for (the role check
    # and the tenant each): the token is verified once per request.
    known: Principal | None = getattr(request.state, "principal", None)
    if known is None:
        scheme, token = get_authorization_scheme_param(authorization)
        known = services.auth.authenticate(token if scheme.lower() == "bearer" else None)
        request.state.principal = known
    return known


# ----------------------------------------------------------------- tenancy

TenantHeader = Annotated[
    str | None,
    Header(
        alias=TENANT_HEADER,
        description="Tenant slug: one of the token's tenants (optional for a token that holds "
        "exactly one)",
    ),
]


def body_tenant(request: Request) -> str | None:
    """The JSON body's `tenantId`, from the body `api.middleware.JsonBody` parsed (once)."""
    parsed = getattr(request.state, PARSED_BODY, None)
    tenant = parsed.get("tenantId") if isinstance(parsed, dict) else None
    return tenant if isinstance(tenant, str) else None


async def _tenant(
    request: Request,
    settings: SettingsDep,
    principal: Annotated[Principal, Depends(_principal)],
    header: TenantHeader = None,
) -> str:
    """The one place a request's tenant is decided; routes and idempotency keys both use it.

    The header names it, else the body's `tenantId` (POST /runs); the two must agree. What is
    named must be one of the token's tenants (`Principal.tenant_for`).
    """
    named_in_body = body_tenant(request)
    if header is not None and named_in_body is not None and header != named_in_body:
        raise InvalidTenant(f"tenantId {named_in_body!r} does not match {TENANT_HEADER} {header!r}")
    return principal.tenant_for(header or named_in_body, settings.default_tenant)


Tenant = Annotated[str, Depends(_tenant)]


@dataclass(frozen=True)
class _RequireScope:
    scope: str

    async def __call__(self, principal: Annotated[Principal, Depends(_principal)]) -> Principal:
        return require_scope(principal, self.scope)


def _role(scope: str) -> Any:
    """The dependency that enforces `scope`, declaring it to the OpenAPI document with the same
    value (`api.openapi` turns it into the roles that hold it)."""
    return Security(_RequireScope(scope), scopes=[scope])


Viewer = Annotated[Principal, _role(VIEWER)]
Operator = Annotated[Principal, _role(OPERATOR)]
Admin = Annotated[Principal, _role(ADMIN)]
