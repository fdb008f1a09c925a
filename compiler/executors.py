"""Checking a run step's `uses` and `with` against the executors a service has, at compile time.

The compiler imports nothing of the service: the caller (the API, the CLI, the worker) passes
an executor catalog as plain data, each `uses` value mapped to the JSON Schema of the `with` it
takes, or to None for an executor that declares no parameters (any `with` passes). Without a
catalog nothing is checked here and an unknown executor is only found when its step runs.

A value in `with` that holds an expression (`{{ ... }}`) is known only when the step runs, so
the schema can judge its key but not its value: errors about such values are left to run time.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

import jsonschema

from compiler.errors import ErrorDetail, join_path

ExecutorCatalog = Mapping[str, Mapping[str, Any] | None]
"""`uses` → JSON Schema (draft 2020-12) of its `with`, or None when it declares none."""

# Errors about which keys are there, not about values: they hold whatever the values are.
_KEY_VALIDATORS = frozenset({"required", "additionalProperties", "unevaluatedProperties"})


def did_you_mean(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str:
    """` (did you mean 'x'?)`, or `` when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _executor_hint(uses: str, catalog: Iterable[str]) -> str:
    """A "did you mean" for an unknown `uses`, comparing the names after a shared `scheme:`
    prefix: on the whole string the prefix makes any two names look alike (`builtin:build` was
    offered `builtin:fail`)."""
    scheme, colon, name = uses.rpartition(":")
    if not colon:
        return did_you_mean(uses, catalog, 0.8)
    same_scheme = {c.rpartition(":")[2]: c for c in catalog if c.rpartition(":")[0] == scheme}
    close = difflib.get_close_matches(name, list(same_scheme), n=1, cutoff=0.6)
    return f" (did you mean {same_scheme[close[0]]!r}?)" if close else ""


def check_run(
    catalog: ExecutorCatalog, uses: str, with_: Mapping[str, Any], path: str
) -> list[ErrorDetail]:
    """Errors for one run step at `path` (`spec.steps[0].run`): an unknown `uses`, or a `with`
    its executor's schema refuses (an unknown key, a missing one, a literal of the wrong type)."""
    if uses not in catalog:
        known = ", ".join(sorted(catalog)) or "none"
        return [
            ErrorDetail(
                f"{path}.uses",
                f"unknown executor {uses!r}{_executor_hint(uses, catalog)}; "
                f"this service has: {known} (an operator adds executors with a package of "
                "`taskrunner.executors` entry points: docs/executors.md)",
            )
        ]
    schema = catalog[uses]
    if schema is None:
        return []
    validator = jsonschema.Draft202012Validator(schema)
    merged: dict[str, list[str]] = {}  # one error per path, as the compiler reports them
    for err in sorted(validator.iter_errors(dict(with_)), key=lambda e: list(map(str, e.path))):
        if err.validator not in _KEY_VALIDATORS and _holds_expression(err.instance):
            continue
        where = join_path([f"{path}.with", *err.absolute_path])
        merged.setdefault(where, []).append(_message(err, schema))
    return [ErrorDetail(where, "; ".join(messages)) for where, messages in merged.items()]


def _message(err: jsonschema.ValidationError, schema: Mapping[str, Any]) -> str:
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = _properties(err.schema)
        extra = sorted(k for k in err.instance if k not in allowed)
        hints = "".join(did_you_mean(k, allowed) for k in extra[:1])
        names = ", ".join(repr(k) for k in extra)
        takes = ", ".join(sorted(allowed)) or "no parameters"
        return f"unknown parameter {names}{hints}; it takes: {takes}"
    return err.message


def _properties(schema: Any) -> list[str]:
    props = schema.get("properties", {}) if isinstance(schema, Mapping) else {}
    return sorted(props)


def _holds_expression(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value
    if isinstance(value, Mapping):
        return any(_holds_expression(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_expression(v) for v in value)
    return False
