"""Checking the inputs given with a request against the pack's declared inputs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema

from compiler.errors import ErrorDetail, join_path
from compiler.loader import MAX_NESTING
from compiler.manifest import InputDef

_TYPE_NAMES = {
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "a boolean",
    "object": "an object",
    "array": "an array",
}


def type_matches(kind: str, value: Any) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if kind == "number":
        # NaN and infinity have no JSON form, so no stable hash.
        if isinstance(value, float):
            return math.isfinite(value)
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    return False


_SURROGATE = "holds a lone UTF-16 surrogate (\\uD800-\\uDFFF without its pair), not Unicode text"


def _is_text(text: str) -> bool:
    """Whether `text` is Unicode text, which a lone surrogate (from a JSON escape) is not."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def json_problem(value: Any, path: str) -> ErrorDetail | None:
    """Why `value` cannot go into a plan, or None: it must be plain JSON (no NaN or infinity,
    string keys only), nested no deeper than a manifest may be (the loader's MAX_NESTING).

    Inputs arrive as data, not YAML text, so the loader's checks have not seen them; without
    this, a value nested a few hundred levels deep fails deep inside the plan's serialisation.
    """
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if depth > MAX_NESTING:
            return ErrorDetail(where, f"nested deeper than {MAX_NESTING} levels")
        if isinstance(item, dict):
            for key, inner in item.items():
                if not isinstance(key, str):
                    return ErrorDetail(where, f"object keys must be strings, got {key!r}")
                if not _is_text(key):
                    return ErrorDetail(where, _SURROGATE)
                stack.append((inner, f"{where}.{key}", depth + 1))
        elif isinstance(item, list):
            stack.extend((inner, f"{where}[{i}]", depth + 1) for i, inner in enumerate(item))
        elif isinstance(item, float):
            if not math.isfinite(item):
                return ErrorDetail(where, "NaN and infinity are not allowed")
        elif isinstance(item, str) and not _is_text(item):
            return ErrorDetail(where, _SURROGATE)
        elif isinstance(item, int) and not isinstance(item, bool) and abs(item) > 2**53 - 1:
            return ErrorDetail(where, "beyond ±(2^53 - 1): JSON cannot carry it exactly")
        elif item is not None and not isinstance(item, str | int):
            return ErrorDetail(where, f"{type(item).__name__} is not a JSON value")
    return None


def check_value(defn: InputDef, value: Any, path: str) -> list[ErrorDetail]:
    """Errors for one value against its declaration: type first, then whether it is plain JSON,
    then the optional JSON Schema."""
    if not type_matches(defn.type, value):
        got = type(value).__name__ if value is not None else "null"
        return [ErrorDetail(path, f"must be {_TYPE_NAMES[defn.type]}, got {got}")]
    problem = json_problem(value, path)
    if problem is not None:
        return [problem]
    if defn.schema_ is None:
        return []
    validator = jsonschema.Draft202012Validator(defn.schema_)
    try:
        found = sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
    except Exception as exc:  # the author's schema may fail in any way
        # A schema can pass check_schema and still fail to apply: an unresolvable or recursive
        # $ref, a `pattern` that is not a regular expression.
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return [ErrorDetail(path, f"cannot check against the input's schema: {message}")]
    errors = []
    for err in found:
        where = join_path([path, *err.absolute_path]) if err.absolute_path else path
        errors.append(ErrorDetail(where, err.message))
    return errors


def check_schema(defn: InputDef, path: str) -> list[ErrorDetail]:
    if defn.schema_ is None:
        return []
    try:
        jsonschema.Draft202012Validator.check_schema(defn.schema_)
    except jsonschema.SchemaError as err:
        return [ErrorDetail(path, f"not a valid JSON Schema: {err.message}")]
    return []


def resolve_inputs(
    declared: Sequence[InputDef], given: Any
) -> tuple[dict[str, Any], list[ErrorDetail]]:
    """The pack's input values: given ones checked, defaults filled, missing required reported."""
    errors: list[ErrorDetail] = []
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        return {}, [ErrorDetail("inputs", "must be an object of input names to values")]
    by_name = {d.name: d for d in declared}
    for name in given:
        if isinstance(name, str) and not _is_text(name):
            shown = name.encode("utf-8", "backslashreplace").decode("utf-8")
            errors.append(ErrorDetail(f"inputs.{shown}", f"the name {_SURROGATE}"))
        elif name not in by_name:
            known = ", ".join(sorted(by_name)) or "none"
            errors.append(ErrorDetail(f"inputs.{name}", f"unknown input (declared: {known})"))
    values: dict[str, Any] = {}
    for index, defn in enumerate(declared):
        if defn.name in given:
            value = given[defn.name]
            found = check_value(defn, value, f"inputs.{defn.name}")
            errors.extend(found)
            if not found:
                values[defn.name] = _normalise(defn.type, value)
        elif defn.default is not None:
            found = check_value(defn, defn.default, f"spec.inputs[{index}].default")
            errors.extend(found)
            values[defn.name] = _normalise(defn.type, defn.default)
        elif defn.required:
            errors.append(ErrorDetail(f"inputs.{defn.name}", "required input is missing"))
    return values, errors


def _normalise(kind: str, value: Any) -> Any:
    # 3.0 given for an integer input is the integer 3, so the plan (and its hash) is the same.
    if kind == "integer" and isinstance(value, float):
        return int(value)
    return value
