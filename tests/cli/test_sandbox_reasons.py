"""`taskrunner runs show` of a run whose step broke a sandbox limit names the limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from activities.sandbox.host import host_sandbox
from tests.api.test_sandbox_limits import SLOW_SHELL
from tests.cli.test_client import Cli, env, pack_file, taskrunner, tenant

__all__ = ["env", "taskrunner", "tenant"]

pytestmark = pytest.mark.skipif(
    host_sandbox().unavailable is not None,
    reason=f"this host cannot sandbox: {host_sandbox().unavailable}",
)


async def test_show_names_the_limit_the_step_broke(taskrunner: Cli, tmp_path: Path) -> None:
    created = await taskrunner("runs", "create", pack_file(tmp_path, SLOW_SHELL), "--wait")
    assert created.code == 1, created
    run_id = created.out.splitlines()[0].split()[1]
    shown = await taskrunner("runs", "show", run_id)
    assert shown.code == 1
    lines = shown.out.splitlines()
    assert any("nap" in line and "Failed (timeout)" in line for line in lines), shown.out
    assert "step nap failed (timeout)" in shown.out
