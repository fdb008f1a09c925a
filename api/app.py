"""The app factory: `create_app(settings)` wires settings, the one Temporal client, the database,
auth, metrics, error handlers, middleware and the routers. Nothing is built at import time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span

from api import errors, idempotency, openapi
from api.auth import Authenticator
from api.database import ApiDatabase
from api.deps import Services, signing_key
from api.gateway import transient
from api.listing import PageTokens
from api.metrics import Metrics
from api.middleware import BodyLimit, HeadAsGet, JsonBody, RequestContext
from api.reads import StateReads
from api.routes import (
    approvals,
    artifacts,
    evidence,
    health,
    logs,
    metadata,
    packs,
    redrive,
    runs,
    schedules,
    schemas,
    simulations,
    webhooks,
)
from api.settings import ApiSettings
from api.temporal import TemporalConnection
from api.tracing import redacted_path
from compiler.executors import ExecutorCatalog
from workflows.contract import telemetry
from workflows.contract.service_key import load_service_key

log = structlog.get_logger("taskrunner.api")

API_VERSION = "0.1.0-draft"
DESCRIPTION = """\
Create, watch and steer runs of declarative task packs; each run is a durable Temporal workflow.

A token names its tenants (`tenant`, or `tenants` as a list; `*` for a platform admin, who also
holds taskrunner.admin). `X-StellaOps-Tenant` names the tenant a request acts in and must be one
of the token's (403 tenant_forbidden); a token with one tenant may leave it out.
Errors use the envelope `{"error": {"code", "message", "traceId"}}`; manifest errors are
`{"errors": [{"path", "message"}]}`.
Scopes: taskrunner.viewer reads, taskrunner.operator creates, approves and cancels,
taskrunner.admin does everything.
"""
TAGS = [
    {"name": "Simulations", "description": "Task pack simulation without execution"},
    {"name": "Runs", "description": "Pack run lifecycle management"},
    {"name": "Logs", "description": "Run log streaming"},
    {"name": "Artifacts", "description": "Run artifact management"},
    {
        "name": "Evidence",
        "description": "Signed evidence bundles of runs, and the key to check them",
    },
    {"name": "Approvals", "description": "Approval gate decisions, and signed approval links"},
    {"name": "Webhooks", "description": "Where a tenant's run events are delivered"},
    {"name": "Metadata", "description": "Service metadata and discovery"},
    {"name": "Health", "description": "Liveness, readiness and metrics (no token needed)"},
]


def create_app(
    settings: ApiSettings,
    *,
    executors: ExecutorCatalog | None = None,
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """The API for `settings`. Raises `api.auth.AuthConfigError` when auth cannot work, and
    `ServiceKeyError` when the configured service key cannot be read.

    `executors` is the catalog packs are checked against at compile time (an unknown `uses`
    or a wrong `with` is a 400): the entry point hands in the installed ones
    (`cli.catalog.installed_executors`); None checks no `uses` against a catalog.

    `tracer_provider`: where the OpenTelemetry spans go; None takes the process's, from the
    standard OTEL_* variables (none when they are unset: tracing off)."""
    provider = tracer_provider or telemetry.process_provider()
    services = Services(
        executors=executors,
        settings=settings,
        temporal=TemporalConnection(settings, telemetry.interceptors(provider)),
        database=ApiDatabase.from_settings(settings),
        metrics=Metrics(tenant_labels=settings.metrics_tenant_labels),
        auth=Authenticator(settings),
        page_tokens=PageTokens(signing_key(settings)),
        reads=StateReads(
            fresh_for=settings.read_fresh_seconds,
            max_age=max(settings.read_max_age_seconds, settings.read_fresh_seconds),
            patience=settings.read_patience_seconds,
            transient=transient,
        ),
        service_key=load_service_key(settings.service_key, settings.service_key_file),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not settings.auth_enabled:
            log.warning(
                "auth.disabled",
                warning="AUTH IS OFF: anyone who can reach this port can start, approve and "
                "cancel runs. Only for a private, single-user service.",
            )
        await services.database.open()
        await services.temporal.open()
        app.state.loop = asyncio.get_running_loop()
        try:
            yield
        finally:
            await services.database.close()

    # /docs (Swagger UI) from assets shipped in the fastapi-offline package, served under
    # /docs/static: FastAPI's default page loads them from a CDN and is blank offline. No
    # /redoc: its page still fetches a logo from Redocly's CDN.
    app = FastAPIOffline(
        static_url="/docs/static",
        redoc_url=None,
        title="TaskRunner API",
        version=API_VERSION,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
    )
    app.state.services = services
    app.state.loop = None
    errors.install(app)
    openapi.install(app, settings)
    idempotency.install(app)
    # Added last = runs first: every request, the 413s included, gets a trace id and a timing.
    app.add_middleware(HeadAsGet)
    app.add_middleware(JsonBody)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContext, metrics=services.metrics)
    if provider is not None:
        # Outside every middleware of ours: the request's span is open when RequestContext
        # reads its trace id. Probes and scrapes would only be noise.
        FastAPIInstrumentor.instrument_app(
            app,
            server_request_hook=redact_link_tokens,
            tracer_provider=provider,
            excluded_urls="/healthz,/readyz,/metrics",
            exclude_spans=["receive", "send"],
        )
    for module in (
        simulations,
        runs,
        redrive,
        logs,
        artifacts,
        evidence,
        packs,
        schedules,
        approvals,
        webhooks,
        metadata,
        schemas,
        health,
    ):
        app.include_router(module.router)
    return app


URL_ATTRIBUTES = ("http.target", "http.url", "url.path", "url.query", "url.full")


def redact_link_tokens(span: Span, scope: dict[str, Any]) -> None:
    """An approval link's token is its authority (and `?other=` holds a second one): neither
    goes to the trace backend. The span's name is the route's template already; its URL
    attributes are set from the raw path, so they are replaced here."""
    path = str(scope.get("path", ""))
    if redacted_path(path) == path or not span.is_recording():
        return
    attributes = getattr(span, "attributes", None) or {}
    for key in URL_ATTRIBUTES:
        if key in attributes:
            span.set_attribute(key, "" if key == "url.query" else redacted_path(path))


SHUTDOWN_GRACE_SECONDS = 5
"""How long a stopping server waits for requests still being answered before it cancels them."""
KEEP_ALIVE_SECONDS = 75
"""How long the server keeps an idle connection open (uvicorn's default is 5 s). Clients close
idle connections first (httpx after 5 s, load balancers after 60 s): a server that closes first
can close one just as a client sends a request on it, and that request gets no answer (1 or 2
ReadErrors in 2,000 keyed creates, 100 at once, in `make bench`)."""


def stop_streams(app: FastAPI) -> None:
    """From any thread, a signal handler too: open log streams end now, each with a last line
    saying so, so a stopping server's wait for its connections ends promptly."""
    loop: asyncio.AbstractEventLoop | None = app.state.loop
    if loop is not None and not loop.is_closed():
        loop.call_soon_threadsafe(app.state.services.stopping.set)
