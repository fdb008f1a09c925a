"""examples/run.yaml runs end to end, and its report is valid JSON whatever the name holds."""

from __future__ import annotations

import json
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from tests.helpers import EXAMPLES, run_to_end


async def test_report_is_valid_json(dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
    name = 'Ada "the Countess" \\ Lovelace'
    manifest = (EXAMPLES / "run.yaml").read_text()
    result, _, _ = await run_to_end(dev_env.client, tmp_path, manifest, {"name": name})
    assert result.status == "succeeded", result
    reports = [p for p in tmp_path.rglob("report.json") if p.is_file()]
    assert reports, list(tmp_path.rglob("*"))
    for report in reports:
        assert json.loads(report.read_text()) == {
            "greeting": f"HELLO, {name.upper()}!\n",
            "times": 2,
        }
