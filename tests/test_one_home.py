"""Rules with one home stay there: a timestamp is formatted by `workflows.contract.times` only.

Read from the source: no module of ours but that one calls `.isoformat(` (parsing with
`fromisoformat` is fine), so RFC 3339 is written at one precision, one way.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("api", "activities", "cli", "compiler", "db", "workflows", "taskrunner")
HOME = ROOT / "workflows" / "contract" / "times.py"
FORMATTING = re.compile(r"\.isoformat\(")


def test_timestamps_are_formatted_in_one_place() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != HOME
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if FORMATTING.search(line)
    ]
    assert found == [], "format timestamps with workflows.contract.times.rfc3339"
    assert FORMATTING.search(HOME.read_text())  # the rule's one home does format them
