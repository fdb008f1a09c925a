"""The history estimate: rough Temporal event counts per workflow history of a simulated run."""

from __future__ import annotations

from typing import Any

import pytest

from compiler import compile_manifest
from compiler import plan as p
from compiler.history import (
    APPROVAL_EXPIRY_EVENTS,
    APPROVAL_GATE_EVENTS,
    CHILD_WORKFLOW_EVENTS,
    EXTRA_APPROVAL_EVENTS,
    HISTORY_EVENT_LIMIT,
    MAP_CHUNK_SIZE,
    MAP_INLINE_LIMIT,
    POLICY_ATTEMPT_EVENTS,
    RETRY_TIMER_EVENTS,
    RUN_ATTEMPT_EVENTS,
    WORKFLOW_EVENTS,
    estimate_history,
    map_runs_in_chunks,
    waits_for_people,
)
from compiler.simulation import SimulationResponse, simulate
from tests.compiler.packs import dump, manifest

RUN = RUN_ATTEMPT_EVENTS
WF = WORKFLOW_EVENTS


def sim(steps: list[dict[str, Any]], **spec: Any) -> SimulationResponse:
    compiled = compile_manifest(dump(manifest({**spec, "steps": steps})))
    return simulate(compiled.plan, compiled.plan_hash)


def noop(step_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "run": {"uses": "builtin:noop", **extra}}


def gate(step_id: str) -> dict[str, Any]:
    return {"id": step_id, "gate": {"approval": {"id": "ok"}}}


def big_map(count: int, template: dict[str, Any]) -> dict[str, Any]:
    return {"id": "m", "map": {"items": "{{ inputs.xs }}", "step": template}}


def xs(count: int) -> list[dict[str, Any]]:
    return [{"name": "xs", "type": "array", "default": list(range(count))}]


@pytest.mark.parametrize(
    ("steps", "spec", "largest"),
    [
        ([noop("a")], {}, WF + RUN),
        ([noop("a"), {**noop("b"), "when": False}], {}, WF + RUN),  # skipped steps cost nothing
        # Retries: every attempt counts; with a backoff, a durable timer between attempts.
        ([noop("a", retries={"maxAttempts": 3})], {}, WF + 3 * RUN),
        (
            [noop("a", retries={"maxAttempts": 3, "backoffSeconds": 2})],
            {},
            WF + 3 * RUN + 2 * RETRY_TIMER_EVENTS,
        ),
        (
            [noop("a")],
            {"failure": {"maxAttempts": 2, "backoffSeconds": 1}},
            WF + 2 * RUN + RETRY_TIMER_EVENTS,
        ),
        ([gate("g")], {"approvals": [{"id": "ok"}]}, WF + APPROVAL_GATE_EVENTS),
        (
            [gate("g")],
            {"approvals": [{"id": "ok", "requiredApprovals": 3, "expiresAfterSeconds": 60}]},
            WF + APPROVAL_GATE_EVENTS + 2 * EXTRA_APPROVAL_EVENTS + APPROVAL_EXPIRY_EVENTS,
        ),
        (
            [{"id": "g", "gate": {"policy": {"policy": "p", "retryCount": 1}}}],
            {"policies": [{"id": "p", "condition": True}]},
            WF + 2 * POLICY_ATTEMPT_EVENTS + RETRY_TIMER_EVENTS,
        ),
        (
            [
                {
                    "id": "g",
                    "gate": {
                        "policy": {
                            "policy": "p",
                            "failureAction": "requestOverride",
                            "approvalId": "ok",
                        }
                    },
                }
            ],
            {"policies": [{"id": "p", "condition": True}], "approvals": [{"id": "ok"}]},
            WF + POLICY_ATTEMPT_EVENTS + APPROVAL_GATE_EVENTS,
        ),
        (
            [
                {
                    "id": "g",
                    "gate": {
                        "policy": {
                            "policy": "p",
                            "failureAction": "branch",
                            "else": [noop("e1"), noop("e2")],
                        }
                    },
                }
            ],
            # A policy known to fail: its else steps run.
            {"policies": [{"id": "p", "condition": False}]},
            WF + POLICY_ATTEMPT_EVENTS + 2 * RUN,
        ),
        (
            [{"id": "par", "parallel": {"steps": [noop("x"), noop("y"), noop("z")]}}],
            {},
            WF + 3 * RUN,
        ),
        (
            [
                {
                    "id": "l",
                    "loop": {"items": {"range": {"end": 4}}, "steps": [noop("x"), noop("y")]},
                }
            ],
            {},
            WF + 8 * RUN,
        ),
        # Unknown items count once.
        (
            [
                noop("a"),
                {
                    "id": "l",
                    "loop": {"items": {"expression": "steps.a.outputs"}, "steps": [noop("x")]},
                },
            ],
            {},
            WF + 2 * RUN,
        ),
        # The costliest branch that may be taken.
        (
            [
                noop("a"),
                {
                    "id": "c",
                    "conditional": {
                        "branches": [
                            {"condition": "steps.a.outputs.x", "steps": [noop("b1")]},
                            {"condition": "steps.a.outputs.y", "steps": [noop("b2"), noop("b3")]},
                        ],
                        "else": [noop("e")],
                    },
                },
            ],
            {},
            WF + RUN + 2 * RUN,
        ),
        (
            [
                {
                    "id": "c",
                    "conditional": {
                        "branches": [
                            {"condition": False, "steps": [noop("b1"), noop("b2"), noop("b3")]}
                        ],
                        "else": [noop("e")],
                    },
                }
            ],
            {},
            WF + RUN,
        ),
    ],
)
def test_inline_costs(steps: list[dict[str, Any]], spec: dict[str, Any], largest: int) -> None:
    result = sim(steps, **spec)
    assert result["historyEstimate"] == largest
    assert result["historyEvents"] == largest  # one workflow: the run's own
    assert result["warnings"] == []


def test_small_map_runs_inline() -> None:
    result = sim([big_map(MAP_INLINE_LIMIT, noop("t"))], inputs=xs(MAP_INLINE_LIMIT))
    assert result["historyEstimate"] == result["historyEvents"] == WF + MAP_INLINE_LIMIT * RUN


def test_large_map_runs_in_chunks() -> None:
    count = 2 * MAP_CHUNK_SIZE + 1
    result = sim([noop("a"), big_map(count, noop("t"))], inputs=xs(count))
    parent = WF + RUN + 3 * CHILD_WORKFLOW_EVENTS
    full_chunk = WF + MAP_CHUNK_SIZE * RUN
    last_chunk = WF + 1 * RUN
    assert result["historyEstimate"] == full_chunk
    assert result["historyEvents"] == parent + 2 * full_chunk + last_chunk


def test_large_map_with_an_approval_gate_stays_inline() -> None:
    count = MAP_INLINE_LIMIT + 1
    template = {"id": "t", "parallel": {"steps": [noop("x"), gate("g")]}}
    result = sim([big_map(count, template)], inputs=xs(count), approvals=[{"id": "ok"}])
    expected = WF + count * (RUN + APPROVAL_GATE_EVENTS)
    assert result["historyEstimate"] == result["historyEvents"] == expected


def test_maps_inside_a_chunk_run_inline() -> None:
    outer = MAP_INLINE_LIMIT + 1
    inner = {"id": "inner", "map": {"items": "{{ inputs.ys }}", "step": noop("t")}}
    result = sim(
        [{"id": "outer", "map": {"items": "{{ inputs.xs }}", "step": inner}}],
        inputs=[*xs(outer), {"name": "ys", "type": "array", "default": list(range(300))}],
    )
    # One chunk holds all 201 outer items; the chunk workflow does not fan out again, so each
    # 300-item inner map runs in the chunk's own history.
    assert result["historyEstimate"] == WF + outer * 300 * RUN
    assert result["historyEvents"] == WF + CHILD_WORKFLOW_EVENTS + WF + outer * 300 * RUN
    assert any("more than Temporal's limit" in w for w in result["warnings"])


def test_a_history_past_the_limit_warns() -> None:
    result = sim(
        [
            {
                "id": "l",
                "loop": {
                    "items": {"range": {"end": 10000}},
                    "maxIterations": 10000,
                    "steps": [noop("x")],
                },
            }
        ]
    )
    assert result["historyEstimate"] == WF + 10000 * RUN > HISTORY_EVENT_LIMIT
    assert len(result["warnings"]) == 1
    # A loop: the run continues as new between the steps inside it, so it relies on that.
    assert f"Temporal's limit of {HISTORY_EVENT_LIMIT}" in result["warnings"][0]


def test_estimate_counts_workflows() -> None:
    count = MAP_CHUNK_SIZE + 1
    compiled = compile_manifest(
        dump(manifest({"inputs": xs(count), "steps": [big_map(count, noop("t"))]}))
    )
    estimate = estimate_history(compiled.plan, simulate(compiled.plan, compiled.plan_hash)["steps"])
    assert estimate.workflows == 3


def test_chunking_rule_matches_the_workflow() -> None:
    compiled = compile_manifest(
        dump(
            manifest(
                {
                    "approvals": [{"id": "ok"}],
                    "policies": [{"id": "p", "condition": True}],
                    "steps": [
                        {"id": "m1", "map": {"items": [1], "step": noop("t1")}},
                        {"id": "m2", "map": {"items": [1], "step": gate("g")}},
                        {
                            "id": "m3",
                            "map": {
                                "items": [1],
                                "step": {
                                    "id": "g3",
                                    "gate": {
                                        "policy": {
                                            "policy": "p",
                                            "failureAction": "requestOverride",
                                            "approvalId": "ok",
                                        }
                                    },
                                },
                            },
                        },
                        {
                            "id": "m4",
                            "map": {
                                "items": [1],
                                "step": {
                                    "id": "g4",
                                    "gate": {"policy": {"policy": "p", "failureAction": "warn"}},
                                },
                            },
                        },
                    ],
                }
            )
        )
    )
    maps = [s for s in compiled.plan.steps if isinstance(s, p.MapStep)]
    assert [waits_for_people(m.step) for m in maps] == [False, True, True, False]
    assert [map_runs_in_chunks(m, MAP_INLINE_LIMIT + 1) for m in maps] == [True, False, False, True]
    assert not map_runs_in_chunks(maps[0], MAP_INLINE_LIMIT)


def test_collapsed_large_map_still_runs_in_chunks() -> None:
    count = 2 * MAP_CHUNK_SIZE + 1
    compiled = compile_manifest(
        dump(manifest({"inputs": xs(count), "steps": [noop("a"), big_map(count, noop("t"))]}))
    )
    full = simulate(compiled.plan, compiled.plan_hash)
    collapsed = simulate(compiled.plan, compiled.plan_hash, max_steps=10)
    assert len(collapsed["steps"][1]["children"]) == 1
    assert (collapsed["historyEstimate"], collapsed["historyEvents"]) == (
        full["historyEstimate"],
        full["historyEvents"],
    )


def test_many_small_top_level_steps_rely_on_continue_as_new() -> None:
    count = HISTORY_EVENT_LIMIT // RUN + 1
    result = sim([noop(f"s{i}") for i in range(count)])
    assert result["historyEstimate"] == WF + count * RUN > HISTORY_EVENT_LIMIT
    assert result["warnings"] == [
        f"the run's own history would reach about {WF + count * RUN} events, past Temporal's "
        f"limit of {HISTORY_EVENT_LIMIT}: it relies on continuing as new between steps"
    ]


def long_loop(step_id: str) -> dict[str, Any]:
    iterations = HISTORY_EVENT_LIMIT // (2 * RUN) + 1
    return {
        "id": step_id,
        "loop": {
            "items": {"range": {"end": iterations}},
            "maxIterations": 10000,
            "steps": [noop("x"), noop("y")],
        },
    }


def test_a_long_loop_relies_on_continue_as_new_inside_it() -> None:
    """The run continues as new between the steps inside a loop: however long, the loop is no
    stretch no continue-as-new can save. Inside a parallel block it is."""
    result = sim([long_loop("l")])
    assert result["historyEstimate"] > HISTORY_EVENT_LIMIT
    assert result["warnings"] == [
        f"the run's own history would reach about {result['historyEstimate']} events, past "
        f"Temporal's limit of {HISTORY_EVENT_LIMIT}: it relies on continuing as new between steps"
    ]
    beside = sim([{"id": "both", "parallel": {"steps": [long_loop("l"), noop("z")]}}])
    assert beside["warnings"][0].startswith("both: this step alone would put about")


def test_a_map_of_many_chunks_fans_out_in_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAP_CHILDREN_PER_WORKFLOW chunks the run starts groups of chunks, as the workflow
    does (compiler.history.map_children): 20 chunks, 3 a workflow, make 3 groups of up to 9
    chunks, those 6 groups of up to 3, then the chunks; no history starts more than 3."""
    from compiler import history

    monkeypatch.setattr(history, "MAP_INLINE_LIMIT", 4)
    monkeypatch.setattr(history, "MAP_CHUNK_SIZE", 5)
    monkeypatch.setattr(history, "MAP_CHILDREN_PER_WORKFLOW", 3)
    count = 100
    compiled = compile_manifest(
        dump(manifest({"inputs": xs(count), "steps": [big_map(count, noop("t"))]}))
    )
    estimate = estimate_history(compiled.plan, simulate(compiled.plan, compiled.plan_hash)["steps"])
    assert estimate.workflows == 1 + 3 + 6 + 20
    chunk = WF + 5 * RUN
    assert estimate.largest == max(chunk, WF + 3 * CHILD_WORKFLOW_EVENTS)
    full = WF + 3 * CHILD_WORKFLOW_EVENTS  # a history that starts three children
    # The run, the groups of chunks 0-8 and 9-17, the short group of chunks 18-19 (which starts
    # them directly), the six groups of three chunks, the twenty chunks.
    assert (
        estimate.total == full + 2 * full + (WF + 2 * CHILD_WORKFLOW_EVENTS) + 6 * full + 20 * chunk
    )


def test_a_million_items_stay_under_the_history_target() -> None:
    """A million-item map: 2,000 chunks under 20 groups; the run's history holds 20 starts."""
    from compiler import history

    assert history.map_children(0, 2000) == [(n, 100) for n in range(0, 2000, 100)]
    assert history.map_children(0, 200) == [(0, 100), (100, 100)]
    assert history.map_span(100) == 1
    assert history.map_span(100 * 100 + 1) == 100 * 100
