"""Fixtures for the pure compiler tests (no Temporal): running the installed `taskrunner` CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.compiler.packs import ROOT

CliRunner = Callable[..., subprocess.CompletedProcess[str]]


def _script() -> list[str]:
    """The console script installed next to this interpreter, else `python -m cli.main`."""
    script = Path(sys.executable).parent / "taskrunner"
    if script.exists():
        return [str(script)]
    found = shutil.which("taskrunner")
    return [found] if found else [sys.executable, "-m", "cli.main"]


@pytest.fixture(scope="session")
def taskrunner(tmp_path_factory: pytest.TempPathFactory) -> CliRunner:
    """Run `taskrunner ARGS...` in a subprocess, from a folder outside the repo."""
    command = _script()
    cwd = tmp_path_factory.mktemp("cli")

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "TASKRUNNER_DEBUG"}
        return subprocess.run(
            [*command, *args],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=cwd,
            env=env,
            timeout=60,
            check=False,
        )

    return run


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
