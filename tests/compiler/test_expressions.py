"""The expression language: JMESPath in `{{ }}`, references, conditions and rendering."""

from __future__ import annotations

from typing import Any

import pytest

from compiler.expressions import (
    ExpressionError,
    Reference,
    evaluate,
    evaluate_condition,
    parse,
    references,
    render,
    secret_name,
    strip_braces,
    template_parts,
    template_secrets,
    to_text,
    truthy,
)

SCOPE: dict[str, Any] = {
    "inputs": {"target": "app:v1", "count": 3, "hosts": ["a", "b"], "flag": False},
    "steps": {"build": {"status": "Succeeded", "outputs": {"image": "img", "size": 12}}},
    "item": {"name": "x"},
    "index": 2,
}


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("inputs.target", "app:v1"),
        ("inputs.count", 3),
        ("inputs.hosts[1]", "b"),
        ("length(inputs.hosts)", 2),
        ("steps.build.outputs.image", "img"),
        ("steps.build.status == 'Succeeded'", True),
        ("inputs.missing", None),
        ("index", 2),
        ("item.name", "x"),
        ("inputs.hosts[?@ != 'a']", ["b"]),
        ("`[1, 2]`", [1, 2]),
        ("inputs.count > `2`", True),
        ("join(',', inputs.hosts)", "a,b"),
    ],
)
def test_evaluate(expression: str, value: Any) -> None:
    assert evaluate(expression, SCOPE) == value


def test_evaluate_runtime_error_is_an_expression_error() -> None:
    with pytest.raises(ExpressionError, match="failed"):
        evaluate("length(inputs.count)", SCOPE)


@pytest.mark.parametrize(
    ("expression", "refs"),
    [
        ("inputs.target", [Reference("inputs", "target")]),
        ("steps.build.outputs.image", [Reference("steps", "build")]),
        ('steps."my-step".status', [Reference("steps", "my-step")]),
        ("item", [Reference("item", None)]),
        ("length(inputs.hosts) > `1`", [Reference("inputs", "hosts")]),
        # Inside a filter or projection, names read the current element, not the scope.
        ("inputs.hosts[?name == 'x'].port", [Reference("inputs", "hosts")]),
        ("inputs.hosts[*].name", [Reference("inputs", "hosts")]),
        ("`3`", []),
        ("inputs.a || steps.b.outputs", [Reference("inputs", "a"), Reference("steps", "b")]),
    ],
)
def test_references(expression: str, refs: list[Reference]) -> None:
    assert references(expression) == refs


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("inputs.[", "invalid expression"),
        ("", "empty expression"),
        ("   ", "empty expression"),
        ("nope(inputs)", "unknown function 'nope'"),
        ("inputs.hosts[?nope(@)]", "unknown function 'nope'"),
        ("a-b", "invalid expression"),
    ],
)
def test_bad_expressions(expression: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        references(expression)


def test_parse_returns_the_ast() -> None:
    assert parse("inputs.a")["type"] == "subexpression"


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (None, True),
        (True, True),
        (False, False),
        ("inputs.flag", False),
        ("{{ inputs.flag }}", False),
        ("inputs.hosts", True),
        ("inputs.missing", False),
        ("`[]`", False),
        ("`{}`", False),
        ("''", False),
        ("`0`", True),  # JMESPath truthiness: 0 is true
        ("{{ inputs.count > `2` }}", True),
    ],
)
def test_evaluate_condition(condition: str | bool | None, expected: bool) -> None:
    assert evaluate_condition(condition, SCOPE) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        (False, False),
        ("", False),
        ([], False),
        ({}, False),
        (0, True),
        ("x", True),
        ([0], True),
    ],
)
def test_truthy(value: Any, expected: bool) -> None:
    assert truthy(value) is expected


@pytest.mark.parametrize(
    ("template", "rendered"),
    [
        ("{{ inputs.count }}", 3),  # a whole-string expression keeps its type
        ("{{inputs.hosts}}", ["a", "b"]),
        ("n={{ inputs.count }}", "n=3"),
        ("{{ inputs.target }} and {{ index }}", "app:v1 and 2"),
        ("hosts: {{ inputs.hosts }}", 'hosts: ["a","b"]'),
        ("flag={{ inputs.flag }}", "flag=false"),
        ("none={{ inputs.missing }}", "none="),
        (" {{ inputs.count }}", " 3"),  # not exactly one expression: interpolation
        ("plain text", "plain text"),
        ("{{ secrets.TOKEN }}", "{{ secrets.TOKEN }}"),  # left for the activity
        (
            "Bearer {{ secrets.TOKEN }} for {{ inputs.target }}",
            "Bearer {{ secrets.TOKEN }} for app:v1",
        ),
        ({"a": ["{{ index }}", {"b": "{{ item.name }}"}], "n": 5}, {"a": [2, {"b": "x"}], "n": 5}),
    ],
)
def test_render(template: Any, rendered: Any) -> None:
    assert render(template, SCOPE) == rendered


def test_render_error_is_an_expression_error() -> None:
    with pytest.raises(ExpressionError):
        render("x {{ length(inputs.count) }}", SCOPE)


def test_braces_and_parts() -> None:
    assert strip_braces("{{ a.b }}") == "a.b"
    assert strip_braces("  a.b ") == "a.b"
    assert strip_braces("{{ a }} {{ b }}") == "{{ a }} {{ b }}"
    assert template_parts("x {{ a }} y {{b}}") == ["a", "b"]
    assert template_parts("no templates") == []


def test_secret_names() -> None:
    assert secret_name("secrets.TOKEN") == "TOKEN"
    assert secret_name(" secrets.TOKEN ") == "TOKEN"
    assert secret_name("secrets.TOKEN.x") is None
    assert secret_name("inputs.TOKEN") is None
    assert template_secrets({"a": ["{{ secrets.A }}", "x {{ secrets.B }}"], "c": 1}) == {"A", "B"}


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, ""),
        ("s", "s"),
        (True, "true"),
        (1.5, "1.5"),
        (3, "3"),
        ({"b": 1, "a": [2]}, '{"a":[2],"b":1}'),
    ],
)
def test_to_text(value: Any, text: str) -> None:
    assert to_text(value) == text
