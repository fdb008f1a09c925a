"""Simulation: the contract's SimulationResponse for every step kind, worked out at plan time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from compiler import compile_manifest
from compiler.simulation import SimulationResponse, SimulationStep, simulate
from tests.compiler.packs import EXAMPLES, dump, example, manifest

# The contract's SimulationResponse and what it refers to, copied from
# contract/taskrunner-openapi.yaml (components.schemas), with `$ref`s made local. Steps must not
# carry keys the contract does not define.
CONTRACT_SCHEMAS = yaml.safe_load(
    """
SimulationResponse:
  type: object
  required: [planHash, failurePolicy, steps, outputs, hasPendingApprovals]
  properties:
    planHash: {type: string, pattern: '^sha256:[a-f0-9]{64}$'}
    failurePolicy: {$ref: '#/$defs/FailurePolicy'}
    steps: {type: array, items: {$ref: '#/$defs/SimulationStep'}}
    outputs: {type: array, items: {$ref: '#/$defs/SimulationOutput'}}
    hasPendingApprovals: {type: boolean}
SimulationStep:
  type: object
  additionalProperties: false
  required: [id, templateId, kind, enabled, status, children]
  properties:
    id: {type: string}
    templateId: {type: string}
    kind: {type: string, enum: [Run, GateApproval, GatePolicy, Parallel, Map, Loop, Conditional,
                                Unknown]}
    enabled: {type: boolean}
    status: {type: string, enum: [Pending, Skipped, RequiresApproval, RequiresPolicy, WillIterate,
                                  WillBranch]}
    statusReason: {type: string}
    uses: {type: string}
    approvalId: {type: string}
    gateMessage: {type: string}
    maxParallel: {type: integer}
    continueOnError: {type: boolean}
    children: {type: array, items: {$ref: '#/$defs/SimulationStep'}}
    loopInfo: {$ref: '#/$defs/LoopInfo'}
    conditionalInfo: {$ref: '#/$defs/ConditionalInfo'}
    policyInfo: {$ref: '#/$defs/PolicyInfo'}
LoopInfo:
  type: object
  additionalProperties: false
  properties:
    itemsExpression: {type: string}
    iterator: {type: string}
    index: {type: string}
    maxIterations: {type: integer}
    aggregationMode: {type: string, enum: [collect, merge, last, first, none]}
ConditionalInfo:
  type: object
  additionalProperties: false
  properties:
    branches:
      type: array
      items:
        type: object
        additionalProperties: false
        properties: {condition: {type: string}, stepCount: {type: integer}}
    elseStepCount: {type: integer}
    outputUnion: {type: boolean}
PolicyInfo:
  type: object
  additionalProperties: false
  properties:
    policyId: {type: string}
    policyVersion: {type: string}
    failureAction: {type: string, enum: [abort, warn, requestOverride, branch]}
    retryCount: {type: integer}
SimulationOutput:
  type: object
  additionalProperties: false
  required: [name, type, requiresRuntimeValue]
  properties:
    name: {type: string}
    type: {type: string}
    requiresRuntimeValue: {type: boolean}
    pathExpression: {type: string}
    valueExpression: {type: string}
FailurePolicy:
  type: object
  additionalProperties: false
  required: [maxAttempts, backoffSeconds, continueOnError]
  properties:
    maxAttempts: {type: integer, minimum: 1}
    backoffSeconds: {type: integer, minimum: 0}
    continueOnError: {type: boolean}
"""
)
RESPONSE_SCHEMA = {**CONTRACT_SCHEMAS["SimulationResponse"], "$defs": CONTRACT_SCHEMAS}


def sim(text: str, inputs: dict[str, Any] | None = None) -> SimulationResponse:
    compiled = compile_manifest(text, inputs)
    result = simulate(compiled.plan, compiled.plan_hash)
    jsonschema.validate(result, RESPONSE_SCHEMA)
    return result


def sim_steps(steps: list[dict[str, Any]], **spec: Any) -> SimulationResponse:
    inputs = spec.pop("given", None)
    return sim(dump(manifest({**spec, "steps": steps})), inputs)


def flat(steps: list[SimulationStep]) -> list[tuple[str, str, str]]:
    """(id, status, reason) of every step, depth first."""
    out: list[tuple[str, str, str]] = []
    for step in steps:
        out.append((step["id"], step["status"], step.get("statusReason", "")))
        out += flat(step["children"])
    return out


def run(step_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "run": {"uses": "builtin:noop"}, **extra}


# ------------------------------------------------------------------ the contract's examples


def test_contract_create_run_example() -> None:
    text = example("contract/create-run.yaml")
    result = sim(text)
    assert result == {
        "planHash": compile_manifest(text).plan_hash,
        "failurePolicy": {"maxAttempts": 1, "backoffSeconds": 0, "continueOnError": False},
        "steps": [
            {
                "id": "build",
                "templateId": "build",
                "kind": "Run",
                "enabled": True,
                "status": "Pending",
                "uses": "builtin:build",
                "continueOnError": False,
                "children": [],
            },
            {
                "id": "approval",
                "templateId": "approval",
                "kind": "GateApproval",
                "enabled": True,
                "status": "RequiresApproval",
                "approvalId": "security-review",
                "gateMessage": "Security review required before deploy",
                "continueOnError": False,
                "children": [],
            },
            {
                "id": "deploy",
                "templateId": "deploy",
                "kind": "Run",
                "enabled": True,
                "status": "Pending",
                "uses": "builtin:deploy",
                "continueOnError": False,
                "children": [],
            },
        ],
        "outputs": [],
        "hasPendingApprovals": True,
        "approvals": [
            {
                "approvalId": "security-review",
                "requiredApprovals": 1,
                "grants": ["packs.approve"],
                "allowRequester": False,
                "quorum": [],
                "missing": ["1 more approver"],
                "onExpiry": "reject",
            }
        ],
        "historyEstimate": 5 + 6 + 5 + 6,
        "historyEvents": 5 + 6 + 5 + 6,
        "warnings": [],
    }


def test_contract_basic_simulation_example() -> None:
    result = sim(
        example("contract/basic-simulation.yaml"), {"target": "registry.example.com/app:v1.2.3"}
    )
    # The contract's example response, plus continueOnError and the history fields.
    assert result["steps"] == [
        {
            "id": "scan",
            "templateId": "scan",
            "kind": "Run",
            "enabled": True,
            "status": "Pending",
            "uses": "builtin:scanner",
            "continueOnError": False,
            "children": [],
        }
    ]
    assert result["outputs"] == []
    assert result["hasPendingApprovals"] is False
    assert result["failurePolicy"] == {
        "maxAttempts": 1,
        "backoffSeconds": 0,
        "continueOnError": False,
    }


@pytest.mark.parametrize("path", sorted(EXAMPLES.rglob("*.yaml")), ids=lambda p: p.name)
def test_every_example_simulates_within_the_contract(path: Path) -> None:
    inputs = {"name": "Ada"} if path.name == "run.yaml" else None
    if path.name == "basic-simulation.yaml":
        inputs = {"target": "x"}
    result = sim(path.read_text(), inputs)
    assert result["warnings"] == []


# ------------------------------------------------------------------ each kind


def test_run_step() -> None:
    result = sim_steps([{"id": "a", "continueOnError": True, "run": {"uses": "builtin:echo"}}])
    assert result["steps"][0] == {
        "id": "a",
        "templateId": "a",
        "kind": "Run",
        "enabled": True,
        "status": "Pending",
        "uses": "builtin:echo",
        "continueOnError": True,
        "children": [],
    }


def test_parallel_step() -> None:
    result = sim_steps([{"id": "p", "parallel": {"steps": [run("x"), run("y")]}}])
    step = result["steps"][0]
    assert (step["kind"], step["status"], step["maxParallel"]) == ("Parallel", "Pending", 2)
    assert [c["id"] for c in step["children"]] == ["x", "y"]


def test_map_with_static_items_expands_each_iteration() -> None:
    template = {"id": "t", "parallel": {"maxParallel": 1, "steps": [run("u"), run("v")]}}
    result = sim_steps(
        [{"id": "m", "map": {"items": ["a", "b"], "maxParallel": 4, "step": template}}]
    )
    step = result["steps"][0]
    assert (step["kind"], step["status"], step["maxParallel"]) == ("Map", "WillIterate", 4)
    assert [(c["id"], c["templateId"]) for c in step["children"]] == [
        ("m[0]::t", "t"),
        ("m[1]::t", "t"),
    ]
    # Descendants of the template get the iteration's prefix too.
    assert [s[0] for s in flat(step["children"])] == [
        "m[0]::t",
        "m[0]::u",
        "m[0]::v",
        "m[1]::t",
        "m[1]::u",
        "m[1]::v",
    ]
    assert [c["templateId"] for c in step["children"][1]["children"]] == ["u", "v"]


def test_map_over_inputs_expands_and_evaluates_item_conditions() -> None:
    result = sim_steps(
        [
            {
                "id": "m",
                "map": {
                    "items": "{{ inputs.hosts }}",
                    "step": run("t", when="{{ item != 'skip-me' && index < `3` }}"),
                },
            }
        ],
        inputs=[{"name": "hosts", "type": "array", "default": ["a", "skip-me", "c", "d"]}],
    )
    assert flat(result["steps"]) == [
        ("m", "WillIterate", ""),
        ("m[0]::t", "Pending", ""),
        ("m[1]::t", "Skipped", "condition-false"),
        ("m[2]::t", "Pending", ""),
        ("m[3]::t", "Skipped", "condition-false"),
    ]
    assert result["steps"][0]["children"][1]["enabled"] is False


def test_map_with_runtime_items_lists_the_template_once() -> None:
    result = sim_steps(
        [
            {"id": "src", "run": {"uses": "builtin:noop", "with": {"xs": [1, 2]}}},
            {
                "id": "m",
                "map": {
                    "items": "{{ steps.src.outputs.xs }}",
                    "step": run("t", when="{{ item > `1` }}"),
                },
            },
        ]
    )
    # Unknown items: one child under its own id, its item-reading condition left to the run.
    assert flat(result["steps"][1:]) == [("m", "WillIterate", ""), ("t", "Pending", "")]


def test_map_over_an_echo_steps_outputs_expands() -> None:
    # builtin:echo outputs its rendered `with`, so its outputs are known before the run.
    result = sim_steps(
        [
            {"id": "src", "run": {"uses": "builtin:echo", "with": {"xs": "{{ inputs.xs }}"}}},
            {
                "id": "m",
                "map": {
                    "items": "{{ steps.src.outputs.xs }}",
                    "step": run("t", when="{{ item > `1` }}"),
                },
            },
        ],
        inputs=[{"name": "xs", "type": "array"}],
        given={"xs": [1, 2]},
    )
    assert flat(result["steps"][1:]) == [
        ("m", "WillIterate", ""),
        ("m[0]::t", "Skipped", "condition-false"),
        ("m[1]::t", "Pending", ""),
    ]


def test_map_with_null_items_has_no_iterations() -> None:
    result = sim_steps(
        [{"id": "m", "map": {"items": "{{ inputs.nothing }}", "step": run("t")}}],
        inputs=[{"name": "nothing", "type": "array"}],
    )
    assert result["steps"][0]["children"] == []


def test_map_with_items_that_are_not_a_list_warns() -> None:
    result = sim_steps(
        [{"id": "m", "map": {"items": "{{ inputs.n }}", "step": run("t")}}],
        inputs=[{"name": "n", "type": "integer", "default": 3}],
    )
    assert [c["id"] for c in result["steps"][0]["children"]] == ["t"]
    assert result["warnings"] == ["m: items evaluate to int, not a list: the step will fail"]


@pytest.mark.parametrize(
    ("items", "ids", "expression"),
    [
        ({"range": {"start": 1, "end": 7, "step": 3}}, ["l[0]::b", "l[1]::b"], "range(1, 7, 3)"),
        (
            {"range": {"start": 3, "end": 0, "step": -1}},
            ["l[0]::b", "l[1]::b", "l[2]::b"],
            "range(3, 0, -1)",
        ),
        ({"range": {"end": 0}}, [], "range(0, 0, 1)"),
        ({"static": ["x", {"y": 1}]}, ["l[0]::b", "l[1]::b"], '["x",{"y":1}]'),
        ({"expression": "{{ inputs.xs }}"}, ["l[0]::b", "l[1]::b", "l[2]::b"], "inputs.xs"),
        ({"expression": "steps.a.outputs.xs"}, ["b"], "steps.a.outputs.xs"),
    ],
)
def test_loop_items(items: dict[str, Any], ids: list[str], expression: str) -> None:
    result = sim_steps(
        [run("a"), {"id": "l", "loop": {"items": items, "steps": [run("b")]}}],
        inputs=[{"name": "xs", "type": "array", "default": [1, 2, 3]}],
    )
    loop = result["steps"][1]
    assert (loop["kind"], loop["status"]) == ("Loop", "WillIterate")
    assert [c["id"] for c in loop["children"]] == ids
    assert loop["loopInfo"]["itemsExpression"] == expression


def test_loop_info_and_iteration_variables() -> None:
    result = sim_steps(
        [
            {
                "id": "l",
                "loop": {
                    "items": {"static": ["a", "b", "c"]},
                    "iterator": "letter",
                    "index": "i",
                    "maxIterations": 5,
                    "aggregation": "merge",
                    "steps": [run("first"), run("later", when="{{ i > `0` && letter != 'c' }}")],
                },
            }
        ]
    )
    loop = result["steps"][0]
    assert loop["loopInfo"] == {
        "itemsExpression": '["a","b","c"]',
        "iterator": "letter",
        "index": "i",
        "maxIterations": 5,
        "aggregationMode": "merge",
    }
    assert flat(loop["children"]) == [
        ("l[0]::first", "Pending", ""),
        ("l[0]::later", "Skipped", "condition-false"),
        ("l[1]::first", "Pending", ""),
        ("l[1]::later", "Pending", ""),
        ("l[2]::first", "Pending", ""),
        ("l[2]::later", "Skipped", "condition-false"),
    ]


def test_loop_past_max_iterations_is_capped_with_a_warning() -> None:
    result = sim_steps(
        [
            {
                "id": "l",
                "loop": {
                    "items": {"expression": "inputs.xs"},
                    "maxIterations": 2,
                    "steps": [run("b")],
                },
            }
        ],
        inputs=[{"name": "xs", "type": "array", "default": [1, 2, 3]}],
    )
    assert [c["id"] for c in result["steps"][0]["children"]] == ["l[0]::b", "l[1]::b"]
    assert result["warnings"] == ["l: 3 items, more than maxIterations (2): the step will fail"]


def test_nested_iterations_compose_their_ids() -> None:
    result = sim(example("nested.yaml"))
    ids = [s[0] for s in flat(result["steps"])]
    assert "fan-out[1]::per-host" in ids
    assert "fan-out[1]::per-host[0]::probe" in ids
    assert "fan-out[0]::per-host[1]::probe" in ids


def test_inner_map_hides_the_outer_item() -> None:
    # The inner map's items are unknown, so inside it `item` is the inner item: unknown too.
    inner = {
        "id": "inner",
        "map": {"items": "steps.a.outputs.xs", "step": run("t", when="{{ item == 'x' }}")},
    }
    result = sim_steps([run("a"), {"id": "outer", "map": {"items": ["y"], "step": inner}}])
    assert flat(result["steps"][1]["children"]) == [
        ("outer[0]::inner", "WillIterate", ""),
        ("outer[0]::t", "Pending", ""),
    ]


COND_INPUTS = [{"name": "env", "type": "string", "default": "dev"}]


def conditional(*conditions: Any) -> dict[str, Any]:
    return {
        "id": "c",
        "conditional": {
            "outputUnion": True,
            "branches": [
                {"condition": cond, "steps": [run(f"b{i}"), run(f"b{i}x")]}
                for i, cond in enumerate(conditions)
            ],
            "else": [run("e")],
        },
    }


@pytest.mark.parametrize(
    ("conditions", "taken"),
    [
        (("{{ inputs.env == 'prod' }}", "{{ inputs.env == 'dev' }}"), {"b1"}),
        (("{{ inputs.env == 'dev' }}", "{{ inputs.env == 'dev' }}"), {"b0"}),  # first one wins
        (("{{ inputs.env == 'prod' }}", False), {"e"}),
        ((True, "inputs.env"), {"b0"}),
        # Unknown at plan time: every branch may run...
        (("steps.a.status == 'Failed'", "steps.a.outputs.x"), {"b0", "b1", "e"}),
        # ...except one known false, and all after one known true.
        (("steps.a.status == 'Failed'", False, "inputs.env", "steps.a.outputs"), {"b0", "b2"}),
    ],
)
def test_conditional_branches(conditions: tuple[Any, ...], taken: set[str]) -> None:
    result = sim_steps([run("a"), conditional(*conditions)], inputs=COND_INPUTS)
    step = result["steps"][1]
    assert (step["kind"], step["status"]) == ("Conditional", "WillBranch")
    statuses = {s[0]: s for s in flat(step["children"])}
    for name in [f"b{i}" for i in range(len(conditions))] + ["e"]:
        if name in taken:
            assert statuses[name] == (name, "Pending", "")
        else:
            assert statuses[name] == (name, "Skipped", "branch-not-taken")
        if name != "e":
            assert statuses[name + "x"][1:] == statuses[name][1:]


def test_conditional_info() -> None:
    result = sim_steps([conditional("{{ inputs.env == 'prod' }}", True)], inputs=COND_INPUTS)
    assert result["steps"][0]["conditionalInfo"] == {
        "branches": [
            {"condition": "inputs.env == 'prod'", "stepCount": 2},
            {"condition": "true", "stepCount": 2},
        ],
        "elseStepCount": 1,
        "outputUnion": True,
    }
    assert [c["id"] for c in result["steps"][0]["children"]] == ["b0", "b0x", "b1", "b1x", "e"]


@pytest.mark.parametrize("when", [False, "{{ inputs.go }}", "inputs.go || `[]`"])
def test_when_known_false_skips_the_step_and_everything_inside(when: Any) -> None:
    result = sim_steps(
        [
            run("a"),
            {
                "id": "p",
                "when": when,
                "parallel": {
                    "steps": [run("x"), {"id": "m", "map": {"items": [1, 2], "step": run("t")}}]
                },
            },
        ],
        inputs=[{"name": "go", "type": "boolean", "default": False}],
    )
    assert flat(result["steps"][1:]) == [
        ("p", "Skipped", "condition-false"),
        ("x", "Skipped", "condition-false"),
        ("m", "Skipped", "condition-false"),
        ("m[0]::t", "Skipped", "condition-false"),
        ("m[1]::t", "Skipped", "condition-false"),
    ]
    assert all(not s["enabled"] for s in result["steps"][1]["children"])


@pytest.mark.parametrize(
    "when",
    [
        True,
        "{{ inputs.go }}",
        "steps.a.outputs.x",
        # Reads a step, so it is left to the run, even though the run will find it false.
        "inputs.stop && steps.a.outputs.x",
    ],
)
def test_when_true_or_unknown_leaves_the_step_pending(when: Any) -> None:
    result = sim_steps(
        [run("a"), run("b", when=when)],
        inputs=[
            {"name": "go", "type": "boolean", "default": True},
            {"name": "stop", "type": "boolean", "default": False},
        ],
    )
    assert flat(result["steps"])[1] == ("b", "Pending", "")
    assert result["steps"][1]["enabled"] is True


def test_approval_gate() -> None:
    result = sim_steps(
        [{"id": "g", "gate": {"approval": {"id": "ok"}}}],
        approvals=[{"id": "ok", "message": "Declared message"}],
    )
    assert result["steps"][0] == {
        "id": "g",
        "templateId": "g",
        "kind": "GateApproval",
        "enabled": True,
        "status": "RequiresApproval",
        "approvalId": "ok",
        "gateMessage": "Declared message",
        "continueOnError": False,
        "children": [],
    }
    assert result["hasPendingApprovals"] is True


def test_skipped_approval_gate_is_not_pending() -> None:
    result = sim_steps(
        [{"id": "g", "when": False, "gate": {"approval": {"id": "ok"}}}], approvals=[{"id": "ok"}]
    )
    assert result["steps"][0]["status"] == "Skipped"
    assert result["hasPendingApprovals"] is False


@pytest.mark.parametrize(
    ("action", "extra", "pending"),
    [
        ("abort", {}, False),
        ("warn", {}, False),
        ("requestOverride", {"approvalId": "ok"}, True),
        ("branch", {"else": [run("fallback")]}, False),
    ],
)
def test_policy_gate(action: str, extra: dict[str, Any], pending: bool) -> None:
    # The condition reads a step's outputs, known only at run time: every outcome stays open.
    result = sim_steps(
        [
            run("a"),
            {
                "id": "g",
                "gate": {
                    "policy": {"policy": "p", "failureAction": action, "retryCount": 2, **extra}
                },
            },
        ],
        approvals=[{"id": "ok"}],
        policies=[{"id": "p", "version": "3", "condition": "{{ steps.a.outputs.ok }}"}],
    )
    step = result["steps"][1]
    assert (step["kind"], step["status"]) == ("GatePolicy", "RequiresPolicy")
    assert step["statusReason"] == "policy-unknown"
    assert step["gateMessage"] == (
        "policy p@3 is decided when the run reaches this gate: its condition reads steps.a, "
        "known only at run time"
    )
    assert step["policyInfo"] == {
        "policyId": "p",
        "policyVersion": "3",
        "failureAction": action,
        "retryCount": 2,
    }
    assert step.get("approvalId") == extra.get("approvalId")
    assert [c["id"] for c in step["children"]] == (["fallback"] if action == "branch" else [])
    assert result["hasPendingApprovals"] is pending


POLICY_PACK: dict[str, Any] = {
    "inputs": [{"name": "n", "type": "integer", "default": 0}],
    "approvals": [{"id": "ok"}],
    "policies": [{"id": "small", "version": "2", "condition": "{{ inputs.n < `5` }}"}],
}


def policy_gate(action: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"policy": "small", "failureAction": action}
    if action == "requestOverride":
        body["approvalId"] = "ok"
    if action == "branch":
        body["else"] = [run("fallback")]
    return {"id": "g", "gate": {"policy": body}, **extra}


@pytest.mark.parametrize(
    ("action", "n", "gate", "after", "pending"),
    [
        # Passes: nothing else happens; a pass needs no override and skips the else steps.
        ("abort", 1, ("g", "RequiresPolicy", "policy-passes"), [("next", "Pending", "")], False),
        ("warn", 1, ("g", "RequiresPolicy", "policy-passes"), [("next", "Pending", "")], False),
        (
            "requestOverride",
            1,
            ("g", "RequiresPolicy", "policy-passes"),
            [("next", "Pending", "")],
            False,
        ),
        (
            "branch",
            1,
            ("g", "RequiresPolicy", "policy-passes"),
            [("fallback", "Skipped", "policy-passed"), ("next", "Pending", "")],
            False,
        ),
        # Fails: abort fails the run, warn goes on, requestOverride waits, branch runs else.
        (
            "abort",
            9,
            ("g", "RequiresPolicy", "policy-fails"),
            [("next", "Skipped", "previous-step-failed")],
            False,
        ),
        ("warn", 9, ("g", "RequiresPolicy", "policy-fails"), [("next", "Pending", "")], False),
        (
            "requestOverride",
            9,
            ("g", "RequiresApproval", "policy-fails"),
            [("next", "Pending", "")],
            True,
        ),
        (
            "branch",
            9,
            ("g", "RequiresPolicy", "policy-fails"),
            [("fallback", "Pending", ""), ("next", "Pending", "")],
            False,
        ),
    ],
)
def test_policy_gate_is_decided_from_known_inputs(
    action: str, n: int, gate: tuple[str, str, str], after: list[Any], pending: bool
) -> None:
    result = sim_steps([policy_gate(action), run("next")], **POLICY_PACK, given={"n": n})
    assert flat(result["steps"]) == [gate, *after]
    assert result["hasPendingApprovals"] is pending
    message = result["steps"][0]["gateMessage"]
    assert message.startswith(f"policy small@2 {'passes' if n < 5 else 'fails'} with these inputs")
    if action == "abort" and n >= 5:
        assert result["warnings"] == ["g: policy small@2 fails with these inputs: the step fails"]
    else:
        assert result["warnings"] == []


def test_an_aborting_gate_that_continues_on_error_lets_the_run_go_on() -> None:
    result = sim_steps(
        [policy_gate("abort", continueOnError=True), run("next")], **POLICY_PACK, given={"n": 9}
    )
    assert flat(result["steps"]) == [
        ("g", "RequiresPolicy", "policy-fails"),
        ("next", "Pending", ""),
    ]


def test_a_failing_gate_inside_a_block_stops_what_follows_the_block() -> None:
    # The run fails the parallel block, then skips the rest of the pack.
    result = sim_steps(
        [
            {"id": "par", "parallel": {"steps": [policy_gate("abort"), run("side")]}},
            run("next"),
        ],
        **POLICY_PACK,
        given={"n": 9},
    )
    assert flat(result["steps"]) == [
        ("par", "Pending", ""),
        ("g", "RequiresPolicy", "policy-fails"),
        ("side", "Pending", ""),
        ("next", "Skipped", "previous-step-failed"),
    ]


def test_a_gate_that_may_not_run_does_not_decide_what_follows() -> None:
    # Its `when` is left to the run: if it runs it fails, but it may be skipped.
    gate = policy_gate("abort", when="{{ steps.a.outputs.check }}")
    result = sim_steps([run("a"), gate, run("next")], **POLICY_PACK, given={"n": 9})
    assert flat(result["steps"])[1:] == [
        ("g", "RequiresPolicy", "policy-fails"),
        ("next", "Pending", ""),
    ]


def test_a_condition_that_fails_to_evaluate_fails_the_step() -> None:
    result = sim_steps(
        [policy_gate("branch"), run("next")],
        inputs=[{"name": "n", "type": "integer", "default": 3}],
        policies=[{"id": "small", "condition": "{{ length(inputs.n) > `1` }}"}],
    )
    assert flat(result["steps"]) == [
        ("g", "RequiresPolicy", "policy-error"),
        ("fallback", "Skipped", "policy-error"),
        ("next", "Skipped", "previous-step-failed"),
    ]
    assert "cannot be evaluated with these inputs" in result["steps"][0]["gateMessage"]
    assert result["warnings"] == [f"g: {result['steps'][0]['gateMessage']}"]


def echo(step_id: str, **with_: Any) -> dict[str, Any]:
    return {"id": step_id, "run": {"uses": "builtin:echo", "with": with_}}


CHECK_PACK: dict[str, Any] = {
    "inputs": [{"name": "n", "type": "integer", "default": 0}],
    "secrets": [{"name": "TOKEN"}],
    "policies": [{"id": "small", "condition": "{{ steps.scan.outputs.found < `5` }}"}],
}


@pytest.mark.parametrize(("n", "reason"), [(1, "policy-passes"), (9, "policy-fails")])
def test_a_policy_reads_an_echo_steps_outputs(n: int, reason: str) -> None:
    result = sim_steps(
        [echo("scan", found="{{ inputs.n }}", note="found {{ inputs.n }}"), policy_gate("warn")],
        **CHECK_PACK,
        given={"n": n},
    )
    assert result["steps"][1]["statusReason"] == reason


@pytest.mark.parametrize(
    ("scan", "reads"),
    [
        # A secret is filled in by the worker: the outputs are the run's to know.
        ([echo("scan", found="{{ inputs.n }}", token="{{ secrets.TOKEN }}")], "steps.scan"),
        # A step that may be skipped.
        (
            [echo("scan", found="{{ inputs.n }}") | {"when": "{{ steps.a.outputs.go }}"}],
            "steps.scan",
        ),
        # Only in a branch the run may not take: known inside it, not after it.
        (
            [
                {
                    "id": "c",
                    "conditional": {
                        "branches": [
                            {
                                "condition": "{{ steps.a.outputs.go }}",
                                "steps": [echo("scan", found="{{ inputs.n }}")],
                            }
                        ],
                    },
                }
            ],
            "steps.scan",
        ),
        # Inside a loop's iterations.
        (
            [
                {
                    "id": "l",
                    "loop": {
                        "items": {"static": [1]},
                        "steps": [echo("scan", found="{{ item }}")],
                    },
                }
            ],
            "steps.scan",
        ),
    ],
)
def test_outputs_the_run_may_not_produce_leave_the_policy_to_the_run(
    scan: list[dict[str, Any]], reads: str
) -> None:
    result = sim_steps([run("a"), *scan, policy_gate("warn")], **CHECK_PACK, given={"n": 9})
    gate = result["steps"][-1]
    assert gate["statusReason"] == "policy-unknown"
    assert f"its condition reads {reads}, known only at run time" in gate["gateMessage"]


def test_a_branch_known_taken_makes_its_outputs_known_after_it() -> None:
    branch = {
        "id": "c",
        "conditional": {
            "branches": [{"condition": "{{ inputs.n > `0` }}", "steps": [echo("scan", found=7)]}],
            "else": [echo("scan2", found=0)],
        },
    }
    result = sim_steps([branch, policy_gate("warn")], **CHECK_PACK, given={"n": 1})
    assert result["steps"][1]["statusReason"] == "policy-fails"


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (
            0,
            [
                ("scan", "Pending", ""),
                ("warn-only", "RequiresPolicy", "policy-passes"),
                ("findings", "RequiresPolicy", "policy-passes"),
                ("file-ticket", "Skipped", "policy-passed"),
                ("override", "RequiresPolicy", "policy-passes"),
                ("publish", "Pending", ""),
            ],
        ),
        (
            2,
            [
                ("scan", "Pending", ""),
                ("warn-only", "RequiresPolicy", "policy-passes"),
                ("findings", "RequiresPolicy", "policy-fails"),
                ("file-ticket", "Pending", ""),
                ("override", "RequiresPolicy", "policy-passes"),
                ("publish", "Pending", ""),
            ],
        ),
        (
            7,
            [
                ("scan", "Pending", ""),
                ("warn-only", "RequiresPolicy", "policy-fails"),
                ("findings", "RequiresPolicy", "policy-fails"),
                ("file-ticket", "Pending", ""),
                ("override", "RequiresApproval", "policy-fails"),
                ("publish", "Pending", ""),
            ],
        ),
    ],
)
def test_the_gate_policy_example_follows_its_inputs(
    n: int, expected: list[tuple[str, str, str]]
) -> None:
    """What examples/gate-policy.yaml's comments promise for the inputs they suggest."""
    result = sim(example("gate-policy.yaml"), {"criticalFindings": n})
    assert flat(result["steps"]) == expected
    assert result["hasPendingApprovals"] is (n >= 5)


def test_outputs() -> None:
    result = sim_steps(
        [run("a")],
        inputs=[{"name": "x", "default": "v"}],
        outputs=[
            {"name": "report", "type": "file", "path": "out/report.json"},
            {"name": "fromInputs", "type": "object", "expression": "{{ inputs.x }}"},
            {"name": "fromSteps", "type": "object", "expression": "steps.a.outputs"},
        ],
    )
    assert result["outputs"] == [
        {
            "name": "report",
            "type": "file",
            "requiresRuntimeValue": True,
            "pathExpression": "out/report.json",
        },
        {
            "name": "fromInputs",
            "type": "object",
            "requiresRuntimeValue": False,
            "valueExpression": "inputs.x",
        },
        {
            "name": "fromSteps",
            "type": "object",
            "requiresRuntimeValue": True,
            "valueExpression": "steps.a.outputs",
        },
    ]


def test_failure_policy_is_the_packs() -> None:
    result = sim_steps(
        [run("a")], failure={"maxAttempts": 3, "backoffSeconds": 7, "continueOnError": True}
    )
    assert result["failurePolicy"] == {
        "maxAttempts": 3,
        "backoffSeconds": 7,
        "continueOnError": True,
    }
    assert result["steps"][0]["continueOnError"] is True


def test_simulation_is_pure() -> None:
    compiled = compile_manifest(example("nested.yaml"))
    before = compiled.plan.model_dump()
    first = simulate(compiled.plan, compiled.plan_hash)
    assert simulate(compiled.plan, compiled.plan_hash) == first
    assert compiled.plan.model_dump() == before


def test_huge_expansions_are_listed_once() -> None:
    """Nested loops multiply: past the step limit, iterations are not expanded, quickly."""
    import time

    def loop(step_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": step_id,
            "loop": {"items": {"range": {"end": 10000}}, "maxIterations": 10000, "steps": [body]},
        }

    started = time.perf_counter()
    result = sim_steps([loop("outer", loop("middle", loop("inner", run("x"))))])
    assert time.perf_counter() - started < 5
    assert flat(result["steps"]) == [
        ("outer", "WillIterate", ""),
        ("middle", "WillIterate", ""),
        ("inner", "WillIterate", ""),
        ("x", "Pending", ""),
    ]
    assert result["warnings"][0] == (
        "the run has more than 50000 steps: iterations are listed once, not expanded"
    )
    assert result["historyEstimate"] == 5 + 6 * 10000**3


def test_step_limit_is_adjustable() -> None:
    compiled = compile_manifest(example("map.yaml"))
    expanded = simulate(compiled.plan, compiled.plan_hash)
    assert len(expanded["steps"][0]["children"]) == 4
    capped = simulate(compiled.plan, compiled.plan_hash, max_steps=5)
    assert [c["id"] for c in capped["steps"][0]["children"]] == ["ping-host"]
    # The estimate is the same either way: the collapsed one multiplies by the counts.
    assert capped["historyEstimate"] == expanded["historyEstimate"]
    assert capped["historyEvents"] == expanded["historyEvents"]
