"""planHash: the same manifest and inputs give the same hash anywhere; any change that matters
changes it; formatting does not."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from compiler import ManifestError, compile_manifest
from compiler.hashing import canonical_json, plan_document
from tests.compiler.packs import ROOT, dump

HASH = re.compile(r"^sha256:[a-f0-9]{64}$")

PACK = """\
# A pack exercising most of the plan.
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata:
  name: hash-me
  version: 1.0.0
  description: Hash stability.
spec:
  inputs:
    - name: target
      type: string
      required: true
    - name: count
      type: integer
      default: 2
  secrets:
    - name: TOKEN
  approvals:
    - id: release
      grants: [packs.approve]
  policies:
    - id: small
      condition: "{{ inputs.count < `10` }}"
  failure:
    maxAttempts: 1
  steps:
    - id: build
      run:
        uses: builtin:echo
        with:
          target: "{{ inputs.target }}"   # typed value
          auth: "Bearer {{ secrets.TOKEN }}"
          flags: [a, b]
    - id: each
      map:
        items: "{{ inputs.target }}"
        step:
          id: one
          run: {uses: "builtin:noop"}
    - id: gate
      gate:
        approval: {id: release}
    - id: check
      gate:
        policy: {policy: small}
  outputs:
    - name: result
      type: object
      expression: "{{ steps.build.outputs }}"
"""

REFORMATTED = """\
{"kind": "TaskPack", "apiVersion": 'stellaops.io/pack.v1',
 "spec": {
   "steps": [
     {"run": {"with": {"flags": ["a", "b"], "auth": "Bearer {{ secrets.TOKEN }}",
                       "target": "{{ inputs.target }}"},
              "uses": builtin:echo}, "id": build},
     {id: each, map: {step: {id: one, run: {uses: 'builtin:noop'}}, items: "inputs.target"}},
     {id: gate, gate: {approval: {id: release}}},
     {id: check, gate: {policy: {policy: small}}}],
   "outputs": [{expression: "steps.build.outputs", type: object, name: result}],
   "failure": {},
   "policies": [{condition: "inputs.count < `10`", id: small}],
   "approvals": [{grants: ["packs.approve"], id: "release"}],
   "secrets": [{name: TOKEN}],
   "inputs": [{name: target, required: yes, type: string},
              {default: 2.0, type: integer, name: count}]},
 "metadata": {"version": "1.0.0", "name": "hash-me"}}
"""

INPUTS = {"target": "app"}


def plan_hash_of(text: str, inputs: dict[str, Any] | None = None) -> str:
    return compile_manifest(text, INPUTS if inputs is None else inputs).plan_hash


def test_hash_format_and_repeatability() -> None:
    first = plan_hash_of(PACK)
    assert HASH.match(first)
    assert all(plan_hash_of(PACK) == first for _ in range(3))


def test_reformatting_does_not_change_the_hash() -> None:
    """Comments, key order, quoting, flow vs block style, `yes` for true, 2.0 for 2, and braces
    or none around a whole expression (`items`, conditions, outputs)."""
    assert plan_hash_of(REFORMATTED) == plan_hash_of(PACK)


def test_block_and_flow_dumps_hash_the_same() -> None:
    import yaml

    data = yaml.safe_load(PACK)
    texts = [
        dump(data),
        dump(data, default_flow_style=True),
        dump(data, indent=4, width=30),
        yaml.safe_dump(data, sort_keys=True),
    ]
    assert {plan_hash_of(t) for t in texts} == {plan_hash_of(PACK)}


def test_things_that_do_not_run_do_not_change_the_hash() -> None:
    described = PACK.replace("description: Hash stability.", "description: Something else.")
    described = described.replace(
        "    - id: gate\n", "    - id: gate\n      description: a gate, described\n"
    )
    assert plan_hash_of(described) == plan_hash_of(PACK)


def test_input_declarations_count_through_their_values() -> None:
    """The plan holds the resolved input values, not the declarations: a declaration change that
    resolves to the same values runs the same, so it hashes the same."""
    retyped = PACK.replace(
        "      type: integer\n      default: 2", "      type: number\n      default: 2"
    )
    assert retyped != PACK
    assert plan_hash_of(retyped) == plan_hash_of(PACK)


def test_inputs_equal_as_values_hash_the_same() -> None:
    assert plan_hash_of(PACK, {"target": "app", "count": 2.0}) == plan_hash_of(PACK)
    assert plan_hash_of(PACK, {"count": 2, "target": "app"}) == plan_hash_of(PACK)


def _edit(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(data: dict[str, Any]) -> None:
        node: Any = data
        parts = [int(p) if p.isdigit() else p for p in path.split(".")]
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value

    return apply


def _insert_step(data: dict[str, Any]) -> None:
    data["spec"]["steps"].insert(1, {"id": "extra", "run": {"uses": "builtin:noop"}})


def _swap_steps(data: dict[str, Any]) -> None:
    steps = data["spec"]["steps"]
    steps[2], steps[3] = steps[3], steps[2]


CHANGES: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    ("pack name", _edit("metadata.name", "other")),
    ("pack version", _edit("metadata.version", "1.0.1")),
    ("input default", _edit("spec.inputs.1.default", 3)),
    ("secret added", _edit("spec.secrets", [{"name": "TOKEN"}, {"name": "OTHER"}])),
    ("approval grants", _edit("spec.approvals.0.grants", ["packs.admin"])),
    ("approvals needed", _edit("spec.approvals.0.requiredApprovals", 2)),
    ("approval expiry", _edit("spec.approvals.0.expiresAfterSeconds", 60)),
    ("approval message", _edit("spec.approvals.0.message", "please")),
    ("policy condition", _edit("spec.policies.0.condition", "{{ inputs.count < `11` }}")),
    ("policy version", _edit("spec.policies.0.version", "2")),
    ("failure attempts", _edit("spec.failure.maxAttempts", 2)),
    ("failure backoff", _edit("spec.failure.backoffSeconds", 5)),
    ("failure continueOnError", _edit("spec.failure.continueOnError", True)),
    ("sandbox", _edit("spec.sandbox", {"mode": "open"})),
    ("step id", _edit("spec.steps.2.id", "approve")),
    ("step executor", _edit("spec.steps.0.run.uses", "builtin:noop")),
    ("step with value", _edit("spec.steps.0.run.with.flags", ["a", "c"])),
    ("step with order in a list", _edit("spec.steps.0.run.with.flags", ["b", "a"])),
    ("step when", _edit("spec.steps.0.when", "{{ inputs.count > `1` }}")),
    ("step timeout", _edit("spec.steps.0.run.timeoutSeconds", 10)),
    ("step retries", _edit("spec.steps.0.run.retries", {"maxAttempts": 3})),
    ("step continueOnError", _edit("spec.steps.0.continueOnError", True)),
    ("map items", _edit("spec.steps.1.map.items", ["x"])),
    ("map parallelism", _edit("spec.steps.1.map.maxParallel", 3)),
    ("gate message", _edit("spec.steps.2.gate.approval.message", "go?")),
    ("policy gate action", _edit("spec.steps.3.gate.policy.failureAction", "warn")),
    ("step inserted", _insert_step),
    ("steps reordered", _swap_steps),
    ("output expression", _edit("spec.outputs.0.expression", "{{ steps.build.status }}")),
]


@pytest.mark.parametrize("change", [c[1] for c in CHANGES], ids=[c[0] for c in CHANGES])
def test_a_change_that_matters_changes_the_hash(change: Callable[[dict[str, Any]], None]) -> None:
    import yaml

    data = yaml.safe_load(PACK)
    changed = copy.deepcopy(data)
    change(changed)
    assert plan_hash_of(dump(changed)) != plan_hash_of(dump(data))


@pytest.mark.parametrize(
    "inputs",
    [{"target": "app2"}, {"target": "app", "count": 3}, {"target": "App"}],
)
def test_a_different_input_changes_the_hash(inputs: dict[str, Any]) -> None:
    assert plan_hash_of(PACK, inputs) != plan_hash_of(PACK)


def test_secret_values_are_never_in_the_plan() -> None:
    compiled = compile_manifest(PACK, INPUTS)
    document = plan_document(compiled.plan)
    assert document["secrets"] == ["TOKEN"]
    assert document["steps"][0]["secrets"] == ["TOKEN"]
    # The template stays a template: only the activity resolves it.
    assert document["steps"][0]["with"]["auth"] == "Bearer {{ secrets.TOKEN }}"


def test_canonical_json_is_sorted_and_compact() -> None:
    assert canonical_json({"b": [1, {"d": 1, "c": "é"}], "a": None}) == (
        '{"a":null,"b":[1,{"c":"é","d":1}]}'.encode()
    )


def test_same_hash_in_other_processes() -> None:
    """Another interpreter, with other string-hash seeds, gets the same hash."""
    script = (
        "import sys; from compiler import compile_manifest; "
        "print(compile_manifest(sys.stdin.read(), {'target': 'app'}).plan_hash)"
    )
    expected = plan_hash_of(PACK)
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", script],
            input=PACK,
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=60,
            check=True,
        )
        assert result.stdout.strip() == expected


def test_canonical_json_is_rfc_8785() -> None:
    # ECMAScript number forms, and keys sorted by UTF-16 code units (U+1F600 is D83D DE00, so
    # it sorts before U+E000, where code points would put it after).
    assert canonical_json({"\ue000": 1, "\U0001f600": 2, "n": [1.0, 1e21, 0.1, -0.0]}) == (
        '{"n":[1,1e+21,0.1,0],"\U0001f600":2,"\ue000":1}'.encode()
    )


def test_plan_hash_is_sha256_of_the_rfc_8785_plan_document() -> None:
    """What another implementation does to reproduce a planHash: RFC 8785 over the plan."""
    import hashlib

    import rfc8785

    compiled = compile_manifest(PACK, {"target": "app"})
    again = hashlib.sha256(rfc8785.dumps(plan_document(compiled.plan))).hexdigest()
    assert compiled.plan_hash == f"sha256:{again}"


def test_a_float_written_as_a_whole_number_hashes_as_the_integer() -> None:
    whole = PACK.replace("flags: [a, b]", "flags: [a, b]\n          ratio: 2")
    point = PACK.replace("flags: [a, b]", "flags: [a, b]\n          ratio: 2.0")
    assert (
        compile_manifest(whole, {"target": "app"}).plan_hash
        == compile_manifest(point, {"target": "app"}).plan_hash
    )


def test_an_integer_json_cannot_carry_is_a_clear_error() -> None:
    with pytest.raises(ManifestError) as info:
        compile_manifest(PACK, {"target": "app", "count": 2**60})
    assert [e.path for e in info.value.errors] == ["inputs.count"]
    big = PACK.replace("flags: [a, b]", "flags: [a, b]\n          big: 99999999999999999999")
    with pytest.raises(ManifestError, match=r"2\^53"):
        compile_manifest(big, {"target": "app"})


@pytest.mark.parametrize(
    ("written", "read"),
    [("NO", "NO"), ("on", "on"), ("010", 10), ("12:30", "12:30"), ("0o10", 8), ("yes", "yes")],
)
def test_scalars_are_read_as_yaml_1_2(written: str, read: object) -> None:
    text = PACK.replace("flags: [a, b]", f"flags: [a, b]\n          v: {written}")
    document = plan_document(compile_manifest(text, {"target": "app"}).plan)
    assert document["steps"][0]["with"]["v"] == read
