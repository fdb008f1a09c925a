"""What the API and the worker must agree on: the Temporal connection, and where runs keep files.

Each process reads its own settings class built on this one: `api.settings.ApiSettings`,
`workflows.settings.WorkerSettings`, and `cli.settings.DevSettings` for the embedded service
that runs both. Variables take the `TASKRUNNER_` prefix; the Temporal connection follows
Temporal's own names (`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`). Built by each class's getter,
never at import time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict
from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfig

from workflows.contract.ceilings import CeilingSettings


class SharedSettings(CeilingSettings):
    """The operator's sandbox ceilings (`CeilingSettings`) and the settings below."""

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
    service_key: str | None = Field(
        default=None,
        description="PEM of the service's Ed25519 private key (signs evidence bundles).",
    )
    service_key_file: Path | None = Field(
        default=None,
        description="File holding that PEM instead (`taskrunner dev`: DATA_DIR/service-key.pem).",
    )
    log_level: str = Field(default="info", description="debug, info, warning or error.")
    log_format: str = Field(default="console", description="console or json.")

    webhook_allow_private_targets: bool = Field(
        default=False,
        description="Allow webhook URLs on loopback, link-local and private addresses "
        "(refused by default: the worker would reach into its own network).",
    )


async def connect(settings: SharedSettings, interceptors: Sequence[Interceptor] = ()) -> Client:
    """A client with the pydantic data converter, as every part of TaskRunner uses.

    How to authenticate to Temporal comes from Temporal's own client configuration, read by the
    SDK (`temporalio.envconfig`) as the Temporal CLI and every SDK read it: `TEMPORAL_TLS_*`
    (a client certificate for an mTLS frontend, the server's CA, its name), `TEMPORAL_API_KEY`
    (a token for the frontend's JWT authorizer) and gRPC metadata, from the environment or a
    `temporal.toml` profile (`TEMPORAL_PROFILE`, `TEMPORAL_CONFIG_FILE`). Where and which
    namespace stay the settings' (which read `TEMPORAL_ADDRESS`/`TEMPORAL_NAMESPACE` too).
    """
    config = ClientConfig.load_client_connect_config()
    config["target_host"] = settings.temporal_address
    config["namespace"] = settings.temporal_namespace
    return await Client.connect(
        **config, data_converter=pydantic_data_converter, interceptors=interceptors
    )
