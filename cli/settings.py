"""The embedded service's settings (`taskrunner dev`): the API's and the worker's, and the dev
server's own."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field

from api.settings import ApiSettings
from workflows.settings import WorkerSettings


class DevSettings(ApiSettings, WorkerSettings):
    dev_ui_port: int = Field(default=8233, description="Web UI port of the embedded dev server.")
    dev_db_file: Path | None = Field(
        default=None, description="SQLite file of the embedded dev server (default: data_dir)."
    )


@lru_cache(maxsize=1)
def get_dev_settings() -> DevSettings:
    return DevSettings()
