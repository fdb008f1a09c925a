"""Timestamps as the contract writes them: RFC 3339, in UTC, with a `Z`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

Precision = Literal["seconds", "milliseconds", "microseconds"]


def rfc3339(moment: datetime, precision: Precision = "milliseconds") -> str:
    """`2025-12-06T10:02:00.000Z`. Milliseconds everywhere a person reads it; microseconds only
    where a comparison must not round (Temporal's visibility filters)."""
    return moment.astimezone(UTC).isoformat(timespec=precision).replace("+00:00", "Z")


def now_rfc3339() -> str:
    """The wall clock now, formatted. Never inside a workflow: it reads `workflow.now()`."""
    return rfc3339(datetime.now(UTC))
