"""The client's printing helpers (cli/output.py) and shell completion, with no API running."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cli.output import duration, table

NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "end", "shown"),
    [
        ("2026-12-04T11:59:59.750Z", "2026-12-04T12:00:00.000Z", "250ms"),
        ("2026-12-04T11:59:18Z", None, "42s"),
        ("2026-12-04T11:56:55Z", None, "3m05s"),
        ("2026-12-04T09:56:00Z", None, "2h04m"),
        ("2026-12-01T07:00:00Z", None, "3d05h"),
        ("2026-12-04T12:00:05Z", None, "0ms"),  # a clock ahead of ours: never negative
        (None, None, "-"),
        ("not a time", None, "-"),
    ],
)
def test_duration(start: str | None, end: str | None, shown: str) -> None:
    assert duration(start, end, now=NOW) == shown


class Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


def test_piped_tables_are_plain_columns_never_wrapped() -> None:
    out = Pipe()
    long_id = "run-" + "x" * 150
    table(["RUN ID", "STATUS"], [[long_id, "succeeded"], ["r2", "failed"]], out)
    assert out.getvalue().splitlines() == [
        "RUN ID" + " " * (len(long_id) - 6) + "  STATUS",
        f"{long_id}  succeeded",
        "r2" + " " * (len(long_id) - 2) + "  failed",
    ]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_narrow_terminal_wraps_lines_rather_than_cutting_cells(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.delenv("NO_COLOR", raising=False)
    out = Terminal()
    row = ["run-20261204-f191d518", "succeeded", "2026-12-04T21:04:58.760Z", "140ms"]
    table(["RUN ID", "STATUS", "CREATED", "DURATION"], [row], out)
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert "\x1b[1m" in out.getvalue()  # drawn for a terminal: a bold header
    assert re.search(r"run-20261204-f191d518 +succeeded +2026-12-04T21:04:58\.760Z +140ms", plain)


def script() -> list[str]:
    found = Path(sys.executable).parent / "taskrunner"
    return [str(found)] if found.exists() else [sys.executable, "-m", "cli.main"]


BASH_PROBE = """
source <("$@" completion bash)
try() {
  COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMP_LINE="$*"
  COMP_POINT=${#COMP_LINE}; COMPREPLY=(); _shtab_taskrunner
  echo "${COMPREPLY[*]}"
}
try taskrunner ru
try taskrunner runs ""
try taskrunner runs list -o ""
try taskrunner packs list --na
try taskrunner sch
"""


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completes_commands_options_and_formats() -> None:
    result = subprocess.run(
        ["bash", "-c", BASH_PROBE, "probe", *script()],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "runs",
        "create list show logs artifacts approve cancel redrive",
        "json yaml wide",
        "--name",
        "schedules schema",
    ]


def test_zsh_script_and_unknown_shells() -> None:
    zsh = subprocess.run(
        [*script(), "completion", "zsh"], capture_output=True, text=True, check=False
    )
    assert zsh.returncode == 0, zsh.stderr
    assert zsh.stdout.startswith("#compdef taskrunner")
    runs_list = zsh.stdout.split("_shtab_taskrunner_runs_list_options=(", 1)[1].split("\n)", 1)[0]
    assert ":output:(json yaml wide)" in runs_list and "--status" in runs_list
    if shutil.which("zsh"):
        checked = subprocess.run(["zsh", "-n"], input=zsh.stdout, text=True, check=False)
        assert checked.returncode == 0
    fish = subprocess.run(
        [*script(), "completion", "fish"], capture_output=True, text=True, check=False
    )
    assert fish.returncode == 1 and "invalid choice: 'fish'" in fish.stderr
