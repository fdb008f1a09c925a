"""What a pack author or a link holder writes reaches an operator's terminal as text, never as
terminal control sequences: a step's stderr, a gate's message, a decision's summary could set
the window title, clear the screen, write the clipboard (OSC 52) or hide a fake link (OSC 8)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from activities.sandbox.host import host_sandbox
from tests.cli.test_client import Cli, env, pack_file, taskrunner, tenant

__all__ = ["env", "taskrunner", "tenant"]

pytestmark = pytest.mark.skipif(
    host_sandbox().unavailable is not None,
    reason=f"this host cannot sandbox: {host_sandbox().unavailable}",
)

# OSC 0 (title), OSC 52 (clipboard), ED (clear), SGR, and U+009B (a CSI of its own) in UTF-8.
ESCAPES = r"\033]0;pwned\033\\\033]52;c;cHduZWQ=\033\\\033[2J\033[31mboom\302\2332J"
COMMAND = json.dumps("printf '" + ESCAPES + "\\n' >&2; exit 3")
HOSTILE = f"""
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {{name: cli-hostile-text, version: 1.0.0}}
spec:
  steps:
    - id: loud
      run:
        uses: "builtin:shell"
        with:
          command: {COMMAND}
"""


async def test_a_steps_escape_sequences_are_shown_not_run(taskrunner: Cli, tmp_path: Path) -> None:
    created = await taskrunner("runs", "create", pack_file(tmp_path, HOSTILE), "--wait")
    assert created.code == 1, created
    run_id = created.out.splitlines()[0].split()[1]
    shown = await taskrunner("runs", "show", run_id)
    logs = await taskrunner("runs", "logs", run_id)
    logs_json = await taskrunner("runs", "logs", run_id, "-o", "json")
    for result in (created, shown, logs, logs_json):
        text = result.out + result.err
        assert "boom" in text, result
        assert "\x1b" not in text and "\x9b" not in text, repr(text)
    # The sequences are still there to read, spelled out (in JSON, as JSON escapes them).
    assert "\\x1b]52;c;" in shown.out and "\\x9b2J" in shown.out, shown.out
    assert "\\u009b2j" in logs_json.out.lower() and "\\u001b]52" in logs_json.out.lower()
