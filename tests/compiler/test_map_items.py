"""A map's `items` in a loop's forms (`expression`, `range`, `static`) beside the plain ones.

The plain forms compile as they always did (the plans, and planHashes, of existing packs do not
change); the `expression` and `static` forms compile to the very same plan; a `range` is counted,
never listed, and is checked before any run: a step of 0, a range with no items, more items than
a map may have, numbers JSON cannot carry.
"""

from __future__ import annotations

from typing import Any

import pytest

from compiler import compile_manifest
from compiler.compile import MAP_MAX_ITEMS
from compiler.hashing import plan_document
from compiler.history import MAP_CHUNK_SIZE
from compiler.simulation import simulate
from tests.compiler.packs import dump, errors_of, example, manifest

ECHO = {"id": "one", "run": {"uses": "builtin:echo", "with": {"v": "{{ item }}"}}}


def map_pack(items: Any, **spec: Any) -> str:
    return dump(manifest({**spec, "steps": [{"id": "m", "map": {"items": items, "step": ECHO}}]}))


XS = [{"name": "xs", "type": "array", "default": [3, 1, 2]}]


def test_existing_map_packs_keep_their_plan_hash() -> None:
    # Recorded before maps took the loop's forms: a plan hash is what a run, an approval link
    # and a published pack are pinned to.
    assert compile_manifest(example("map.yaml")).plan_hash == (
        "sha256:a9a03c849af08a4e82f63ed74ce71dd8fda6d1917b3a3bdeed48f156bbe2aab8"
    )


@pytest.mark.parametrize(
    ("plain", "form"),
    [
        ("{{ inputs.xs }}", {"expression": "{{ inputs.xs }}"}),
        ([1, "two", {"three": 3}], {"static": [1, "two", {"three": 3}]}),
    ],
    ids=["expression", "static"],
)
def test_the_loop_forms_of_an_expression_or_a_list_compile_to_the_plain_forms_plan(
    plain: Any, form: dict[str, Any]
) -> None:
    one = compile_manifest(map_pack(plain, inputs=XS))
    other = compile_manifest(map_pack(form, inputs=XS))
    assert plan_document(one.plan) == plan_document(other.plan)
    assert one.plan_hash == other.plan_hash


def test_a_range_is_counted_in_the_plan_not_listed() -> None:
    compiled = compile_manifest(map_pack({"range": {"end": MAP_MAX_ITEMS}}))
    items = plan_document(compiled.plan)["steps"][0]["items"]
    assert items == {"start": 0, "end": MAP_MAX_ITEMS, "step": 1}
    counting_down = compile_manifest(map_pack({"range": {"start": 3, "end": 0, "step": -1}}))
    assert plan_document(counting_down.plan)["steps"][0]["items"] == {
        "start": 3,
        "end": 0,
        "step": -1,
    }
    assert counting_down.plan_hash != compile_manifest(map_pack([3, 2, 1])).plan_hash


def test_simulating_a_range_map_lists_its_items() -> None:
    compiled = compile_manifest(map_pack({"range": {"start": 10, "end": 4, "step": -3}}))
    result = simulate(compiled.plan, compiled.plan_hash)
    children = result["steps"][0]["children"]
    assert [c["id"] for c in children] == ["m[0]::one", "m[1]::one"]


@pytest.mark.parametrize("count", [MAP_CHUNK_SIZE * 3 + 7, 100_000])
def test_a_range_map_is_estimated_as_a_list_of_as_many_items(count: int) -> None:
    counted = compile_manifest(map_pack({"range": {"end": count}}))
    listed = compile_manifest(
        map_pack("{{ inputs.xs }}", inputs=[{"name": "xs", "type": "array"}]),
        {"xs": list(range(count))},
    )
    by_range = simulate(counted.plan, counted.plan_hash)
    by_list = simulate(listed.plan, listed.plan_hash)
    for key in ("historyEstimate", "historyEvents", "warnings"):
        assert by_range[key] == by_list[key], key


def test_a_million_item_range_map_simulates_without_listing_a_million_steps() -> None:
    compiled = compile_manifest(map_pack({"range": {"end": 1_000_000}}))
    result = simulate(compiled.plan, compiled.plan_hash)
    assert [c["id"] for c in result["steps"][0]["children"]] == ["one"]  # listed once
    assert "iterations are listed once" in result["warnings"][0]
    # Every one of the million items is counted: at least one activity's events each.
    assert result["historyEvents"] > 1_000_000 * 3
    assert result["historyEstimate"] < 10_000  # no single history holds them


ITEMS = "spec.steps[0].map.items"


@pytest.mark.parametrize(
    ("items", "path", "message"),
    [
        ({"range": {"end": 10, "step": 0}}, f"{ITEMS}.range.step", "must not be 0"),
        ({"range": {"start": 10, "end": 0}}, f"{ITEMS}.range", "has no items"),
        ({"range": {"start": 0, "end": 10, "step": -1}}, f"{ITEMS}.range", "counts down"),
        (
            {"range": {"end": MAP_MAX_ITEMS + 1}},
            f"{ITEMS}.range",
            f"{MAP_MAX_ITEMS + 1:,} items, more than a map may have ({MAP_MAX_ITEMS:,})",
        ),
        ({"range": {"end": 10**30}}, f"{ITEMS}.range", "more than a map may have"),
        (
            {"range": {"start": 2**60, "end": 2**60 + 5}},
            f"{ITEMS}.range.start",
            "JSON cannot carry it exactly",
        ),
        ({"range": {"start": 1}}, f"{ITEMS}.range.end", "required"),
        ({"range": {"end": "ten"}}, f"{ITEMS}.range.end", "valid integer"),
        ({"range": {"end": 3, "stride": 2}}, f"{ITEMS}.range.stride", "unknown key"),
        ({"rang": {"end": 3}}, f"{ITEMS}.rang", "did you mean 'range'"),
        ({"range": {"end": 3}, "static": [1]}, ITEMS, "exactly one of"),
        ({}, ITEMS, "exactly one of"),
        (5, ITEMS, "items must be an expression (a string), a list, or exactly one of"),
        (True, ITEMS, "items must be an expression (a string), a list, or exactly one of"),
        ({"expression": "{{ inputs.nope }}"}, f"{ITEMS}.expression", "unknown input 'nope'"),
    ],
    ids=[
        "step 0",
        "empty",
        "wrong way",
        "one too many",
        "astronomical",
        "unsafe integer",
        "no end",
        "end not a number",
        "unknown key",
        "misspelt form",
        "two forms",
        "no form",
        "a number",
        "a boolean",
        "unknown input",
    ],
)
def test_a_bad_map_items_is_reported_at_its_path(items: Any, path: str, message: str) -> None:
    errors = errors_of(map_pack(items))
    assert any(p == path and message in m for p, m in errors), errors


def test_a_range_map_s_errors_come_with_the_rest_of_the_pack_s() -> None:
    data = manifest(
        {
            "steps": [
                {"id": "m", "map": {"items": {"range": {"end": 0}}, "step": ECHO}},
                {"id": "n", "run": {"uses": "builtin:echo", "with": {"x": "{{ steps.nope }}"}}},
            ]
        }
    )
    paths = [p for p, _ in errors_of(dump(data))]
    assert f"{ITEMS}.range" in paths and "spec.steps[1].run.with.x" in paths
