"""How the client commands print: `-o json|yaml|wide` and tables drawn by rich.

Every list and show command takes `-o/--output`: `json` (the API's records, exactly as it sent
them), `yaml` (the same, as YAML), `wide` (the table with more columns), or nothing for the
table. A table goes through rich: on a terminal, with a bold header and colour; piped, as plain
columns separated by two spaces, never wrapped or cut (rich's own width guess for a pipe is 80
columns) and without trailing blanks, so scripts and tests can split lines as before.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

FORMATS = ("json", "yaml", "wide")
PIPE_WIDTH = 10_000
"""Width of the console when output is not a terminal: wide enough that no table line wraps."""

STATUS_STYLES = {
    "succeeded": "green",
    "Succeeded": "green",
    "failed": "red",
    "Failed": "red",
    "cancelled": "yellow",
    "Skipped": "dim",
    "running": "cyan",
    "Running": "cyan",
    "awaiting-approval": "magenta",
    "pending": "dim",
    "Pending": "dim",
    "active": "green",
    "disabled": "yellow",
    "paused": "yellow",
}


def add_output_option(parser: argparse.ArgumentParser, *, wide: bool = True) -> None:
    """`-o/--output json|yaml|wide`, and `--json` kept as the old spelling of `-o json`."""
    choices = FORMATS if wide else ("json", "yaml")
    parser.add_argument(
        "--output",
        "-o",
        choices=choices,
        default=None,
        help="json or yaml: the API's records; wide: more columns (default: a table)"
        if wide
        else "json or yaml: the API's record (default: for people)",
    )
    parser.add_argument(
        "--json", dest="output", action="store_const", const="json", help="the same as -o json"
    )


_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
"""Characters a terminal acts on rather than shows: C0 controls but tab and newline (ESC starts
every sequence: a title, a cleared screen, OSC 52's clipboard write, OSC 8's hidden link), DEL,
C1 controls (U+009B is a CSI of its own), and the bidi overrides that reorder what is read."""


def _spelled(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: Any) -> Any:
    """`value` (an API answer) with every string's terminal controls spelled out (`\\x1b`): what
    pack authors, step commands and link holders wrote is shown to people, never obeyed by their
    terminal. For human output; `-o json|yaml` keep the API's text (JSON escapes controls)."""
    if isinstance(value, str):
        return _UNPRINTABLE.sub(_spelled, value)
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [printable(v) for v in value]
    return value


_RAW_IN_JSON = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
"""What json.dumps(ensure_ascii=False) leaves raw that a terminal acts on (it escapes C0)."""


def json_text(data: Any, indent: int | None = None) -> str:
    """JSON as the API sent it, readable (not ASCII-escaped), with DEL, C1 controls and bidi
    overrides as `\\u` escapes too: the same document, which no terminal obeys."""
    text = json.dumps(data, indent=indent, ensure_ascii=False)
    return _RAW_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def dump(data: Any, fmt: str, out: TextIO | None = None) -> None:
    """Print `data` as JSON (indented, as the API sent it) or YAML (block style, keys in order)."""
    out = out or sys.stdout
    if fmt == "yaml":
        import yaml

        out.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100))
    else:
        out.write(json_text(data, indent=2) + "\n")


def console(out: TextIO | None = None) -> Any:
    """A rich Console on `out`: a terminal's width and colours, or plain and unbounded piped."""
    from rich.console import Console

    out = out or sys.stdout
    if out.isatty():
        return Console(file=out, highlight=False)
    # No colour, no markup codes, no width guess: what a pipe gets is plain text.
    return Console(file=out, width=PIPE_WIDTH, color_system=None, highlight=False, emoji=False)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO | None = None) -> None:
    """Print rows under headers: columns two spaces apart, each as wide as its widest cell."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    out = out or sys.stdout
    live = out.isatty()
    grid = Table(
        box=box.SIMPLE_HEAD if live else None,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
        header_style="bold" if live else "",
        show_header=True,
    )
    for header in headers:
        grid.add_column(header, no_wrap=True, overflow="ignore")
    for row in rows:
        styles = [STATUS_STYLES.get(cell, "") if live else "" for cell in row]
        grid.add_row(*(Text(cell, style=style) for cell, style in zip(row, styles, strict=True)))
    target = console(out)
    if live:
        # A table wider than the terminal is not squeezed (rich would cut ids and times to a
        # few letters): its lines run on and the terminal wraps them, as kubectl's do.
        natural = target.measure(grid, options=target.options.update_width(PIPE_WIDTH)).maximum
        if natural > target.width:
            target = type(target)(file=out, highlight=False, width=natural)
        target.print(grid)
        return
    with target.capture() as captured:
        target.print(grid)
    out.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def duration(start: str | None, end: str | None, *, now: datetime | None = None) -> str:
    """From `start` to `end` (or to now, for what has not ended), as `850ms`, `42s`, `3m05s`,
    `2h04m` or `3d05h`: the two largest units, as kubectl and docker print ages."""
    began = parse_time(start)
    if began is None:
        return "-"
    ended = parse_time(end) or now or datetime.now(UTC)
    seconds = max((ended - began).total_seconds(), 0.0)
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"
