"""Settings: one pydantic-settings object for the worker, the API and the embedded service.

Variables take the `TASKRUNNER_` prefix; the Temporal connection follows Temporal's own names
(`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`). Built by `get_settings()`, never at import time.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TASKRUNNER_", extra="ignore")

    temporal_address: str = Field(
        default="127.0.0.1:7233",
        validation_alias=AliasChoices("TEMPORAL_ADDRESS", "TASKRUNNER_TEMPORAL_ADDRESS"),
        description="host:port of the Temporal frontend.",
    )
    temporal_namespace: str = Field(
        default="default",
        validation_alias=AliasChoices("TEMPORAL_NAMESPACE", "TASKRUNNER_TEMPORAL_NAMESPACE"),
        description="Temporal namespace the runs live in.",
    )
    task_queue: str = Field(default="taskrunner", description="Task queue of workers and runs.")
    data_dir: Path = Field(
        default=Path("var"),
        description="Run workspaces and the artifact store (and the dev server's database).",
    )
    heartbeat_timeout_seconds: int = Field(
        default=20, ge=1, description="A worker silent this long is taken for lost; its step moves."
    )
    activity_attempts: int = Field(
        default=5, ge=1, description="Temporal's retries of one step attempt after lost workers."
    )
    max_concurrent_activities: int = Field(
        default=100, ge=1, description="Activities one worker runs at once."
    )

    api_host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    api_port: int = Field(default=8080, description="Port the API listens on.")
    public_url: str | None = Field(
        default=None, description="Base URL clients reach the API at (for Location headers)."
    )
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
    query_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How long the API waits for a worker to answer a query or update (then 503).",
    )
    logs_poll_seconds: float = Field(
        default=0.5,
        gt=0,
        description="How often a followed log stream asks the run for new entries.",
    )

    signing_key: str | None = Field(
        default=None,
        description="Key for signed approval links and webhook secrets (API and workers alike).",
    )
    approval_link_ttl_seconds: int = Field(
        default=86400, ge=60, description="How long a signed approval link stays valid."
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, description="How long one webhook delivery attempt may take."
    )
    idempotency_ttl_seconds: int = Field(
        default=86400,
        ge=86400,
        description="How long an Idempotency-Key and the response it replays are kept (>= 24 h).",
    )

    dev_ui_port: int = Field(default=8233, description="Web UI port of the embedded dev server.")
    dev_db_file: Path | None = Field(
        default=None, description="SQLite file of the embedded dev server (default: data_dir)."
    )
    log_level: str = Field(default="info", description="debug, info, warning or error.")
    log_format: str = Field(default="console", description="console or json.")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
