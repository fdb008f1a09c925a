"""The embedded service's settings (`taskrunner dev`): the API's and the worker's, and the dev
server's own."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field

from api.settings import ApiSettings
from workflows.settings import WorkerSettings


class DevSettings(ApiSettings, WorkerSettings):
    # The dev server's other ports follow its frontend port (7233 unless TEMPORAL_ADDRESS or
    # --port say otherwise), so a second `taskrunner dev --port N` collides with nothing.
    dev_ui_port: int | None = Field(
        default=None, description="Web UI port of the embedded dev server (default: port + 1000)."
    )
    dev_metrics_port: int | None = Field(
        default=None,
        description="Prometheus /metrics port of the embedded dev server (default: port + 1001).",
    )
    dev_http_port: int | None = Field(
        default=None,
        description="HTTP API port of the embedded dev server (default: port + 10).",
    )
    dev_db_file: Path | None = Field(
        default=None, description="SQLite file of the embedded dev server (default: data_dir)."
    )


@lru_cache(maxsize=1)
def get_dev_settings() -> DevSettings:
    return DevSettings()
