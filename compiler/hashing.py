"""Canonical JSON and the plan hash: the same plan gives the same bytes on any machine."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from compiler.plan import Plan


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def plan_document(plan: Plan) -> dict[str, Any]:
    """The plan as JSON data, the form that is hashed, shown and sent to the workflow."""
    return plan.model_dump(mode="json", by_alias=True)


def plan_hash(plan: Plan) -> str:
    """`sha256:` + 64 hex over the plan's canonical JSON."""
    return "sha256:" + hashlib.sha256(canonical_json(plan_document(plan))).hexdigest()
