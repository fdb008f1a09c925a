"""Inputs arrive as data (JSON from the API, files from the CLI), not YAML the loader has checked:
values nested deeper than a manifest may be, NaN and infinity, and non-string keys are refused
with the input's path, never an exception from deep inside the plan's serialisation."""

from __future__ import annotations

import math
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from compiler import ManifestError, compile_manifest
from compiler.loader import MAX_NESTING
from tests.compiler.packs import BASE
from tests.compiler.test_properties import PROPERTY, compiles_or_manifest_error

PACK = yaml.safe_dump(
    {
        **BASE,
        "spec": {
            "inputs": [{"name": "x", "type": "array"}, {"name": "o", "type": "object"}],
            "steps": [
                {"id": "a", "run": {"uses": "builtin:echo", "with": {"v": "{{ inputs.x }}"}}}
            ],
        },
    }
)


def nested(depth: int, leaf: Any = 1) -> list[Any]:
    value: Any = leaf
    for _ in range(depth):
        value = [value]
    assert isinstance(value, list)
    return value


def errors_of(inputs: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ManifestError) as caught:
        compile_manifest(PACK, inputs)
    return [(e.path, e.message) for e in caught.value.errors]


class TestRefusedInputs:
    def test_nesting_up_to_the_manifest_limit_is_fine(self) -> None:
        compiled = compile_manifest(PACK, {"x": nested(MAX_NESTING)})
        assert compiled.plan_hash.startswith("sha256:")

    @pytest.mark.parametrize("depth", [MAX_NESTING + 1, 300, 900])
    def test_deeper_nesting_is_a_manifest_error(self, depth: int) -> None:
        [(path, message)] = errors_of({"x": nested(depth)})
        assert path == "inputs.x" + "[0]" * (MAX_NESTING + 1)
        assert message == f"nested deeper than {MAX_NESTING} levels"

    @pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
    def test_non_finite_numbers_anywhere_are_refused(self, bad: float) -> None:
        assert errors_of({"x": [1, {"y": [bad]}]}) == [
            ("inputs.x[1].y[0]", "NaN and infinity are not allowed")
        ]
        assert errors_of({"o": {"k": bad}}) == [("inputs.o.k", "NaN and infinity are not allowed")]

    def test_non_string_keys_are_refused(self) -> None:
        [(path, message)] = errors_of({"o": {"ok": {1: "x"}}})
        assert path == "inputs.o.ok" and "keys must be strings" in message

    def test_non_json_values_are_refused(self) -> None:
        [(path, message)] = errors_of({"x": [b"bytes"]})
        assert path == "inputs.x[0]" and message == "bytes is not a JSON value"


leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # NaN and infinity included
    st.text(max_size=3),
)


@st.composite
def deep_values(draw: st.DrawFn) -> Any:
    """A leaf wrapped in up to 300 levels of lists and one-key objects."""
    value = draw(leaves)
    for wrap in draw(st.lists(st.sampled_from(["list", "dict"]), max_size=300)):
        value = [value] if wrap == "list" else {"k": value}
    return value


@PROPERTY
@given(deep_values(), deep_values())
def test_deep_and_odd_input_values_compile_or_are_refused(x: Any, o: Any) -> None:
    compiles_or_manifest_error(PACK, {"x": x, "o": o})
    compiles_or_manifest_error(PACK, {"x": [x], "o": {"v": o}})
