"""What the API and the worker must agree on: the Temporal connection, and where runs keep files.

Each process reads its own settings class built on this one: `api.settings.ApiSettings`,
`workflows.settings.WorkerSettings`, and `cli.settings.DevSettings` for the embedded service
that runs both. Variables take the `TASKRUNNER_` prefix; the Temporal connection follows
Temporal's own names (`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`). Built by each class's getter,
never at import time.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter


class SharedSettings(BaseSettings):
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
    public_url: str | None = Field(
        default=None,
        description="Base URL clients reach the API at (Location headers, approval links).",
    )
    signing_key: str | None = Field(
        default=None,
        description="Key for signed approval links and webhook secrets (API and workers alike).",
    )
    log_level: str = Field(default="info", description="debug, info, warning or error.")
    log_format: str = Field(default="console", description="console or json.")


async def connect(settings: SharedSettings) -> Client:
    """A client with the pydantic data converter, as every part of TaskRunner uses."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
    )
