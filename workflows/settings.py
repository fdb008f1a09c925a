"""The worker's settings: the shared connection and store, and how the worker behaves."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from workflows.contract.settings import SharedSettings


class WorkerSettings(SharedSettings):
    max_concurrent_activities: int = Field(
        default=100, ge=1, description="Activities one worker runs at once."
    )
    approval_link_ttl_seconds: int = Field(
        default=86400, ge=60, description="How long a signed approval link stays valid."
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, description="How long one webhook delivery attempt may take."
    )


@lru_cache(maxsize=1)
def get_worker_settings() -> WorkerSettings:
    return WorkerSettings()
