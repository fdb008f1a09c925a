"""The API's settings: the shared connection and store, and how the API serves and starts runs."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field

from workflows.contract.settings import SharedSettings


class ApiSettings(SharedSettings):
    api_host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    pack_trusted_keys_file: Path | None = Field(
        default=None,
        description="PEM file of the Ed25519 public keys whose pack signatures are trusted.",
    )
    pack_require_signatures: bool = Field(
        default=False, description="Refuse to publish a pack without a trusted signature."
    )
    api_port: int = Field(default=8080, description="Port the API listens on.")
    default_tenant: str = Field(default="default", description="Tenant of requests without one.")
    max_body_bytes: int = Field(default=2 * 1024 * 1024, description="Request bodies above: 413.")
    auth_enabled: bool = Field(default=True, description="Require bearer tokens.")
    jwt_hs256_secret: str | None = Field(
        default=None, description="Shared secret for HS256 tokens."
    )
    jwt_rs256_public_key: str | None = Field(
        default=None, description="PEM public key for RS256 tokens."
    )
    jwt_audience: str | None = Field(default=None, description="Expected `aud` claim, if any.")
    jwt_issuer: str | None = Field(default=None, description="Expected `iss` claim, if any.")
    oauth_token_url: str = Field(
        default="https://auth.stellaops.example.com/oauth/token",
        description="Where callers get tokens (the OAuth2 client-credentials token URL the "
        "OpenAPI document names; the contract's by default). The API only verifies tokens.",
    )
    metrics_tenant_labels: bool = Field(
        default=False,
        description="Label /metrics by tenant (names every tenant; /metrics then needs a "
        "taskrunner.metrics or platform-admin token when auth is on).",
    )
    query_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How long the API waits for a worker to answer a query or update (then 503).",
    )
    read_fresh_seconds: float = Field(
        default=0.5,
        ge=0,
        description="A run's state read this recently answers GET run as it is (see api/reads.py).",
    )
    read_max_age_seconds: float = Field(
        default=2.0,
        ge=0,
        description="A state this old at most answers at once while a fresh one is fetched behind.",
    )
    read_patience_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How long a read waits for the run before answering its last known state.",
    )
    logs_poll_seconds: float = Field(
        default=0.5,
        gt=0,
        description="How often a followed log stream asks the run for new entries.",
    )
    database_url: str | None = Field(
        default=None,
        description="The API's database (idempotency keys, webhooks): sqlite+aiosqlite:///path or "
        "postgresql+asyncpg://user:password@host/db; unset: SQLite in the data dir.",
    )
    idempotency_ttl_seconds: int = Field(
        default=86400,
        ge=86400,
        description="How long an Idempotency-Key and the response it replays are kept (>= 24 h).",
    )
    # A run's own behaviour, set by the API into the run's metadata when it starts the run.
    heartbeat_timeout_seconds: int = Field(
        default=20, ge=1, description="A worker silent this long is taken for lost; its step moves."
    )
    activity_attempts: int = Field(
        default=5, ge=1, description="Temporal's retries of one step attempt after lost workers."
    )


@lru_cache(maxsize=1)
def get_api_settings() -> ApiSettings:
    return ApiSettings()
