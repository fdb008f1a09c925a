"""The expression language: JMESPath inside `{{ }}`, parsed at compile time, evaluated purely.

A string that is exactly one `{{ expr }}` takes the expression's value and type; any other string
with `{{ }}` in it is interpolation. Condition-like fields (`when`, `condition`, `items`) hold one
expression, written with or without the braces. `{{ secrets.NAME }}` is left untouched here: only an
activity resolves it, so a secret's value never enters the workflow.

The evaluator is the single pure function the workflow reuses, so it must stay deterministic.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jmespath
import jmespath.functions
from jmespath.exceptions import JMESPathError

_FUNCTIONS = frozenset(jmespath.functions.Functions().FUNCTION_TABLE)
_TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_SECRET = re.compile(r"^secrets\.([A-Za-z_][A-Za-z0-9_]*)$")


class ExpressionError(Exception):
    """An expression that does not parse, or names something it may not."""


@dataclass(frozen=True)
class Reference:
    """A root name an expression reads, with the first field below it when there is one."""

    root: str
    name: str | None


def _single_template(text: str) -> str | None:
    """The expression of a string that is exactly one `{{ expr }}`, else None."""
    match = _TEMPLATE.fullmatch(text)
    if match is None or "{{" in match.group(1):
        return None
    return match.group(1).strip()


def strip_braces(text: str) -> str:
    """`{{ a.b }}` -> `a.b`; a bare expression is returned stripped."""
    inner = _single_template(text.strip())
    return inner if inner is not None else text.strip()


def template_parts(text: str) -> list[str]:
    """The expressions inside `{{ }}` in a template string, in order."""
    return [m.group(1).strip() for m in _TEMPLATE.finditer(text)]


def secret_name(expression: str) -> str | None:
    """`secrets.TOKEN` -> `TOKEN`; None for anything else."""
    match = _SECRET.match(expression.strip())
    return match.group(1) if match else None


def parse(expression: str) -> Any:
    """Parse one bare expression to its JMESPath AST, raising ExpressionError when it is invalid."""
    if not expression.strip():
        raise ExpressionError("empty expression")
    try:
        return jmespath.compile(expression).parsed
    except JMESPathError as exc:
        raise ExpressionError(f"invalid expression {expression!r}: {_first_line(exc)}") from None
    except (RecursionError, ValueError, TypeError) as exc:
        raise ExpressionError(f"invalid expression {expression!r}: {exc}") from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def references(expression: str) -> list[Reference]:
    """Every root-scope name an expression reads: `inputs.target` -> Reference('inputs', 'target').

    Only names read from the root of the scope count: a field inside a projection or filter
    (`items[?name == 'x']`) reads the current element, not the scope.
    """
    return list(_walk_refs(parse(expression)))


_SCOPE_READING_FIRST_CHILD = {
    "subexpression",
    "index_expression",
    "projection",
    "value_projection",
    "filter_projection",
    "flatten",
    "pipe",
}


def _leftmost_field(node: Any) -> str | None:
    while isinstance(node, dict):
        if node.get("type") == "field":
            return str(node["value"])
        if node.get("type") not in _SCOPE_READING_FIRST_CHILD or not node.get("children"):
            return None
        node = node["children"][0]
    return None


def _walk_refs(node: Any) -> Iterator[Reference]:
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    children = node.get("children", [])
    if kind == "field":
        yield Reference(node["value"], None)
    elif kind == "function_expression":
        if node["value"] not in _FUNCTIONS:
            raise ExpressionError(f"unknown function {node['value']!r}")
        for child in children:
            yield from _walk_refs(child)
    elif kind in _SCOPE_READING_FIRST_CHILD:
        # Only the left-most part reads the scope; the rest applies to the value on its left.
        first = children[0] if children else None
        if kind == "subexpression" and isinstance(first, dict) and first.get("type") == "field":
            second = children[1] if len(children) > 1 else None
            yield Reference(first["value"], _leftmost_field(second))
        else:
            yield from _walk_refs(first)
        if kind == "filter_projection" and len(children) > 2:
            yield from _check_functions(children[2])
        for child in children[1:2]:
            yield from _check_functions(child)
    elif kind == "expref":
        yield from _check_functions(node)
    else:
        for child in children:
            yield from _walk_refs(child)


def _check_functions(node: Any) -> Iterator[Reference]:
    """Parts that read an element rather than the scope: only their function names are checked."""
    if not isinstance(node, dict):
        return
    if node.get("type") == "function_expression" and node["value"] not in _FUNCTIONS:
        raise ExpressionError(f"unknown function {node['value']!r}")
    for child in node.get("children", []):
        yield from _check_functions(child)


def evaluate(expression: str, scope: Mapping[str, Any]) -> Any:
    """Evaluate one bare expression against a scope. Raises ExpressionError on a runtime error."""
    try:
        return jmespath.search(expression, dict(scope))
    except JMESPathError as exc:
        raise ExpressionError(f"expression {expression!r} failed: {_first_line(exc)}") from None
    except (TypeError, ValueError, RecursionError) as exc:
        raise ExpressionError(f"expression {expression!r} failed: {exc}") from None


def truthy(value: Any) -> bool:
    """JMESPath truthiness: false, null, empty string, empty list and empty object are false."""
    if value is None or value is False:
        return False
    if isinstance(value, str | list | dict):
        return len(value) > 0
    return True


def evaluate_condition(condition: str | bool | None, scope: Mapping[str, Any]) -> bool:
    """A `when` or branch condition: None means always; a bool is itself; text is an expression."""
    if condition is None:
        return True
    if isinstance(condition, bool):
        return condition
    return truthy(evaluate(strip_braces(condition), scope))


def render(value: Any, scope: Mapping[str, Any]) -> Any:
    """Render templates in a value (deeply through lists and dicts), leaving secrets untouched.

    A string that is exactly one non-secret `{{ expr }}` becomes the expression's value; other
    strings are interpolated, non-string values written as JSON.
    """
    if isinstance(value, str):
        return _render_string(value, scope)
    if isinstance(value, list):
        return [render(v, scope) for v in value]
    if isinstance(value, dict):
        return {k: render(v, scope) for k, v in value.items()}
    return value


def _render_string(text: str, scope: Mapping[str, Any]) -> Any:
    whole = _single_template(text)
    if whole is not None and secret_name(whole) is None:
        return evaluate(whole, scope)

    def replace(match: re.Match[str]) -> str:
        expr = match.group(1).strip()
        if secret_name(expr) is not None:
            return match.group(0)
        return to_text(evaluate(expr, scope))

    return _TEMPLATE.sub(replace, text)


def to_text(value: Any) -> str:
    """How an interpolated value is written into a string."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def template_secrets(value: Any) -> set[str]:
    """Names of the secrets a value refers to through `{{ secrets.NAME }}`."""
    found: set[str] = set()
    if isinstance(value, str):
        for expr in template_parts(value):
            name = secret_name(expr)
            if name:
                found.add(name)
    elif isinstance(value, list):
        for v in value:
            found |= template_secrets(v)
    elif isinstance(value, dict):
        for v in value.values():
            found |= template_secrets(v)
    return found
