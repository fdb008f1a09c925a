"""Canonical JSON and the plan hash: the same plan gives the same bytes on any machine.

The bytes are RFC 8785 canonical JSON (the JSON Canonicalization Scheme, by the `rfc8785`
package): keys sorted by UTF-16 code units, numbers in ECMAScript's shortest form (`1.0` is
`1`), so any other implementation of RFC 8785 reproduces a planHash from the plan document.
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785

from compiler.errors import ManifestError
from compiler.plan import Plan

# Integers JSON carries exactly everywhere (IEEE 754 doubles): RFC 8785 refuses the others.
MAX_SAFE_INTEGER = 2**53 - 1


def canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical JSON of `value`. Raises ManifestError for what has none: a number
    beyond ±(2^53 - 1), NaN or infinity, a lone surrogate."""
    try:
        return rfc8785.dumps(value)
    except rfc8785.IntegerDomainError:
        raise ManifestError.single(
            "", f"a number beyond ±{MAX_SAFE_INTEGER} (2^53 - 1): JSON cannot carry it exactly"
        ) from None
    except rfc8785.CanonicalizationError as exc:
        raise ManifestError.single("", f"the plan has no canonical JSON form: {exc}") from None


def plan_document(plan: Plan) -> dict[str, Any]:
    """The plan as JSON data, the form that is hashed, shown and sent to the workflow."""
    return plan.model_dump(mode="json", by_alias=True)


def plan_hash(plan: Plan) -> str:
    """`sha256:` + 64 hex over the plan's canonical JSON."""
    return "sha256:" + hashlib.sha256(canonical_json(plan_document(plan))).hexdigest()
