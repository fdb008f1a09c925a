"""The operator's sandbox ceilings, read from the environment as every part of TaskRunner reads
them: the API and the worker (their settings build on this class) and the CLI's offline
`validate` and `plan`, so a pack is refused in the same words everywhere.

Kept apart from `settings` so the CLI reads them without importing the Temporal client.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from compiler.ceilings import Ceilings


class CeilingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TASKRUNNER_", extra="ignore")

    # Operator ceilings: the API refuses a pack asking for more at compile time (400 with the
    # field's path), and the worker refuses to run a step whose plan asks for more.
    sandbox_max_memory_mib: int = Field(
        default=4096, ge=1, description="Most `spec.sandbox.memoryLimitMiB` a pack may ask for."
    )
    sandbox_max_cpu_millicores: int = Field(
        default=4000, ge=1, description="Most `spec.sandbox.cpuLimitMillicores` a pack may ask for."
    )
    sandbox_max_quota_seconds: int = Field(
        default=3600, ge=1, description="Most `spec.sandbox.quotaSeconds` (CPU time) per step."
    )
    sandbox_max_timeout_seconds: int = Field(
        default=86400, ge=1, description="Most a run step's `timeoutSeconds` (wall time) may be."
    )
    sandbox_allow_open: bool = Field(
        default=False,
        description="Whether `spec.sandbox.mode: open` (the worker's network) is allowed at all.",
    )

    def ceilings(self) -> Ceilings:
        """The operator ceilings, as the compiler takes them."""
        return Ceilings(
            memory_mib=self.sandbox_max_memory_mib,
            cpu_millicores=self.sandbox_max_cpu_millicores,
            quota_seconds=self.sandbox_max_quota_seconds,
            timeout_seconds=self.sandbox_max_timeout_seconds,
            allow_open=self.sandbox_allow_open,
        )
