"""Dependencies as `Annotated` aliases: what a route declares it needs, nothing built per import.

`Services` holds what `create_app` built once (settings, the Temporal connection, metrics, the
authenticator); the aliases hand out pieces of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, cast

from fastapi import Depends, Header, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from temporalio.client import Client

from api.auth import ADMIN, OPERATOR, VIEWER, Authenticator, Principal, require_scope
from api.errors import InvalidTenant
from api.gateway import RunGateway
from api.ledger import LedgerGateway
from api.listing import PageTokens
from api.metrics import Metrics
from api.reads import StateReads
from api.schemas import MAX_RUN_ID_LENGTH, RUN_ID_PATTERN
from api.settings import ApiSettings
from api.temporal import TemporalConnection

TENANT_HEADER = "X-StellaOps-Tenant"
# A tenant is one path component of the artifact store and part of workflow ids: keep it plain.
TENANT_PATTERN = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}$")


@dataclass(frozen=True)
class Services:
    settings: ApiSettings
    temporal: TemporalConnection
    metrics: Metrics
    auth: Authenticator
    reads: StateReads = field(default_factory=StateReads)
    page_tokens: PageTokens = field(default_factory=lambda: PageTokens(None))


async def _services(request: Request) -> Services:
    return cast(Services, request.app.state.services)


ServicesDep = Annotated[Services, Depends(_services)]


async def _settings(services: ServicesDep) -> ApiSettings:
    return services.settings


SettingsDep = Annotated[ApiSettings, Depends(_settings)]


def signing_key(settings: ApiSettings) -> bytes | None:
    """The signing key as bytes (its UTF-8), as the workers' webhook activity takes it too."""
    return settings.signing_key.encode() if settings.signing_key else None


async def _client(services: ServicesDep) -> Client:
    return await services.temporal.client()


TemporalClient = Annotated[Client, Depends(_client)]


async def _runs(client: TemporalClient, services: ServicesDep) -> RunGateway:
    return RunGateway(client, services.settings, services.metrics, services.reads)


Runs = Annotated[RunGateway, Depends(_runs)]


async def _ledger(client: TemporalClient, services: ServicesDep) -> LedgerGateway:
    return LedgerGateway(client, services.settings)


Ledger = Annotated[LedgerGateway, Depends(_ledger)]


RunId = Annotated[
    str,
    Path(pattern=RUN_ID_PATTERN, max_length=MAX_RUN_ID_LENGTH, description="Unique run identifier"),
]

# ----------------------------------------------------------------- tenancy

TenantHeader = Annotated[
    str | None,
    Header(
        alias=TENANT_HEADER,
        description="Tenant slug (optional for single-tenant deployments)",
    ),
]


def resolve_tenant(
    settings: ApiSettings, header: str | None, body_tenant: str | None = None
) -> str:
    """The request's tenant: the header, else the body's `tenantId`, else the default."""
    tenant = header or body_tenant or settings.default_tenant
    if header and body_tenant and header != body_tenant:
        raise InvalidTenant(f"tenantId {body_tenant!r} does not match {TENANT_HEADER} {header!r}")
    if not TENANT_PATTERN.match(tenant):
        raise InvalidTenant(
            f"tenant {tenant!r} is not a valid slug (letters, digits, '-' and '_', at most 63)"
        )
    return tenant


async def _tenant(settings: SettingsDep, header: TenantHeader = None) -> str:
    return resolve_tenant(settings, header)


Tenant = Annotated[str, Depends(_tenant)]


# ----------------------------------------------------------------- auth

_bearer = HTTPBearer(auto_error=False, description="A JWT carrying taskrunner.* scopes")


async def _principal(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    return services.auth.authenticate(credentials.credentials if credentials else None)


def _scoped(scope: str) -> object:
    async def check(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
        return require_scope(principal, scope)

    return Depends(check)


Viewer = Annotated[Principal, _scoped(VIEWER)]
Operator = Annotated[Principal, _scoped(OPERATOR)]
Admin = Annotated[Principal, _scoped(ADMIN)]
