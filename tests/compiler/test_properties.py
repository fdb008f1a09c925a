"""Property tests: whatever text or data arrives, the compiler answers with a plan or ManifestError.

Nothing else may escape (no pydantic, YAML, jsonschema or recursion errors), and a plan that does
come out hashes the same when compiled again and after a trip through its JSON wire form.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler import ManifestError, compile_manifest
from compiler.hashing import plan_document, plan_hash
from compiler.plan import Plan
from compiler.simulation import simulate
from tests.compiler.packs import BASE, dump

PROPERTY = settings(
    max_examples=int(os.environ.get("TASKRUNNER_PROPERTY_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def compiles_or_manifest_error(text: str | bytes, inputs: Any = None) -> None:
    try:
        compiled = compile_manifest(text, inputs)
    except ManifestError as exc:
        assert exc.errors
        for error in exc.errors:
            assert isinstance(error.path, str)
            assert isinstance(error.message, str) and error.message
        return
    # A plan: stable hash, the same after the wire round trip, and it simulates.
    assert compile_manifest(text, inputs).plan_hash == compiled.plan_hash
    again = Plan.model_validate(plan_document(compiled.plan))
    assert plan_hash(again) == compiled.plan_hash
    result = simulate(compiled.plan, compiled.plan_hash)
    assert result["planHash"] == compiled.plan_hash


# ------------------------------------------------------------------ arbitrary text

YAML_TOKENS = [
    "apiVersion: stellaops.io/pack.v1\n",
    "kind: TaskPack\n",
    "metadata:\n",
    "spec:\n",
    "  steps:\n",
    "  - id: a\n",
    "    run:\n",
    "      uses: builtin:noop\n",
    "  name: x\n",
    "- ",
    ": ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "&a ",
    "*a",
    "!!set ",
    "!!binary ",
    "!!python/name:x ",
    "<<: ",
    "? ",
    "|\n",
    ">\n",
    "  ",
    "\t",
    "\n",
    "---\n",
    "...\n",
    "'",
    '"',
    "#",
    "%YAML 1.1\n",
    ".nan",
    ".inf",
    "~",
    "null",
    "yes",
    "0x1F",
    "1e999",
    "2024-01-01",
    "{{ inputs.x }}",
    "=",
    "\ufeff",
    "\x00",
    "\\",
    "é",
    "9" * 50,
]


@PROPERTY
@given(st.text())
def test_any_text(text: str) -> None:
    compiles_or_manifest_error(text)


@PROPERTY
@given(st.binary())
def test_any_bytes(data: bytes) -> None:
    compiles_or_manifest_error(data)


@PROPERTY
@given(st.lists(st.sampled_from(YAML_TOKENS) | st.text(max_size=5), max_size=60))
def test_yaml_ish_text(tokens: list[str]) -> None:
    compiles_or_manifest_error("".join(tokens))


# ------------------------------------------------------------------ manifest-shaped data

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=10)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=6) | st.integers(), inner, max_size=3)
    ),
    max_leaves=6,
)
# Mostly expressions that compile somewhere, some that never do.
EXPRESSIONS = [
    "{{ inputs.x }}",
    "inputs.xs",
    "{{ steps.s0.outputs.v }}",
    "{{ steps.s1.status }}",
    "steps.s2.outputs",
    "{{ item }}",
    "{{ index > `0` }}",
    "{{ length(inputs.xs) }}",
    "inputs.x == 'v'",
    "`[1, 2]`",
    "x {{ inputs.x }} y",
    "{{ inputs.xs[?@ > `1`] }}",
    "{{ [ }}",
    "{{ }}",
    "{{ secrets.T }}",
    "{{ nope(inputs) }}",
    "steps.zzz.outputs",
    "i + 1",
]
expressions = st.sampled_from(EXPRESSIONS)
conditions = expressions | st.booleans()


def _steps_at(depth: int) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Well-formed steps nested at most `depth` deep (ids are assigned afterwards)."""
    run = st.fixed_dictionaries(
        {"uses": st.sampled_from(["builtin:noop", "builtin:echo"])},
        optional={
            "with": st.dictionaries(st.sampled_from(["a", "b"]), expressions | scalars, max_size=2),
            "retries": st.fixed_dictionaries({"maxAttempts": st.integers(1, 3)}),
        },
    )
    gate = st.sampled_from(
        [
            {"approval": {"id": "ok"}},
            {"policy": {"policy": "p"}},
            {"policy": {"policy": "p", "failureAction": "requestOverride", "approvalId": "ok"}},
            {"policy": {"policy": "p", "failureAction": "warn", "retryCount": 1}},
        ]
    )
    bodies: list[st.SearchStrategy[dict[str, Any]]] = [
        st.fixed_dictionaries({"run": run}),
        st.fixed_dictionaries({"gate": gate}),
    ]
    if depth > 0:
        inner = _steps_at(depth - 1)
        one = inner.filter(bool).map(lambda steps: steps[0])
        items = st.one_of(
            st.fixed_dictionaries(
                {
                    "range": st.fixed_dictionaries(
                        {"end": st.integers(-2, 5)}, optional={"step": st.sampled_from([1, 2, -1])}
                    )
                }
            ),
            st.fixed_dictionaries({"static": st.lists(scalars, max_size=3)}),
            st.fixed_dictionaries({"expression": expressions}),
        )
        bodies += [
            st.fixed_dictionaries(
                {
                    "parallel": st.fixed_dictionaries(
                        {"steps": inner.filter(bool)}, optional={"maxParallel": st.integers(1, 3)}
                    )
                }
            ),
            st.fixed_dictionaries(
                {
                    "map": st.fixed_dictionaries(
                        {"items": expressions | st.lists(scalars, max_size=3), "step": one}
                    )
                }
            ),
            st.fixed_dictionaries(
                {
                    "loop": st.fixed_dictionaries(
                        {"items": items, "steps": inner.filter(bool)},
                        optional={
                            "iterator": st.sampled_from(["item", "i"]),
                            "aggregation": st.sampled_from(["collect", "last"]),
                        },
                    )
                }
            ),
            st.fixed_dictionaries(
                {
                    "conditional": st.fixed_dictionaries(
                        {
                            "branches": st.lists(
                                st.fixed_dictionaries({"condition": conditions, "steps": inner}),
                                min_size=1,
                                max_size=2,
                            )
                        },
                        optional={"else": inner},
                    )
                }
            ),
        ]
    step = st.tuples(
        st.one_of(bodies),
        st.fixed_dictionaries({}, optional={"when": conditions, "continueOnError": st.booleans()}),
    ).map(lambda pair: {"id": "", **pair[1], **pair[0]})
    return st.lists(step, max_size=3)


STEPS = _steps_at(2).filter(bool)


def _number_steps(node: Any, counter: list[int]) -> None:
    """Give every step (a dict with an `id`) the next id, s0, s1, ..., depth first."""
    if isinstance(node, dict):
        if "id" in node and node["id"] == "":
            node["id"] = f"s{counter[0]}"
            counter[0] += 1
        for value in node.values():
            _number_steps(value, counter)
    elif isinstance(node, list):
        for value in node:
            _number_steps(value, counter)


def _slots(node: Any, out: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every (container, key-or-index) in a document, to pick one to break."""
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((node, key))
            _slots(value, out)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out.append((node, index))
            _slots(value, out)
    return out


@st.composite
def manifests(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed manifest, then none, one or a few random breakages."""
    steps = copy.deepcopy(draw(STEPS))
    _number_steps(steps, [0])
    data: dict[str, Any] = {
        **copy.deepcopy(BASE),
        "spec": {
            "inputs": [
                {"name": "x", "type": "string", "default": "v"},
                {"name": "xs", "type": "array", "default": draw(st.lists(scalars, max_size=3))},
            ],
            "secrets": [{"name": "T"}],
            "approvals": [{"id": "ok"}],
            "policies": [{"id": "p", "condition": draw(conditions)}],
            "steps": steps,
            "outputs": draw(
                st.lists(
                    st.sampled_from(
                        [
                            {"name": "o", "type": "object", "expression": "steps.s0.outputs"},
                            {"name": "f", "type": "file", "path": "out/f.txt"},
                        ]
                    ),
                    max_size=2,
                    unique_by=lambda o: o["name"],
                )
            ),
        },
    }
    # Drawn values can be objects the strategies share (sampled_from's): break only copies.
    data = copy.deepcopy(data)
    for _ in range(draw(st.sampled_from([0, 0, 1, 2, 4]))):
        slots = _slots(data, [])
        container, key = slots[draw(st.integers(0, len(slots) - 1))]
        action = draw(st.sampled_from(["replace", "delete", "add", "swap"]))
        if action == "replace":
            container[key] = draw(json_values | expressions)
        elif action == "delete":
            del container[key]
        elif action == "add" and isinstance(container, dict):
            container[draw(st.sampled_from(["bogus", "run", "when", "else", "steps", "id"]))] = (
                draw(json_values)
            )
        elif action == "swap" and isinstance(container, dict):
            container[key] = draw(st.sampled_from(list(container.values())))
    return data


@PROPERTY
@given(manifests(), st.none() | st.dictionaries(st.sampled_from(["x", "xs", "zz"]), json_values))
def test_manifest_shaped_data(data: dict[str, Any], inputs: dict[str, Any] | None) -> None:
    text = dump(data, allow_unicode=True)
    compiles_or_manifest_error(text, inputs)


@PROPERTY
@given(manifests())
def test_manifest_shaped_data_with_aliases(data: dict[str, Any]) -> None:
    # The plain dumper writes anchors and aliases for shared objects; those must be refused, not
    # crash anything.
    compiles_or_manifest_error(yaml.safe_dump(data, sort_keys=False))


@PROPERTY
@given(json_values)
def test_any_inputs_value(inputs: Any) -> None:
    text = yaml.safe_dump(
        {
            **BASE,
            "spec": {
                "inputs": [{"name": "x", "type": "object", "schema": {"type": "object"}}],
                "steps": [
                    {"id": "a", "run": {"uses": "builtin:echo", "with": {"v": "{{ inputs.x }}"}}}
                ],
            },
        }
    )
    compiles_or_manifest_error(text, inputs)
    compiles_or_manifest_error(text, {"x": inputs})
