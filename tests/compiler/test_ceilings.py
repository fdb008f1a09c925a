"""Operator ceilings and sandbox bounds: a pack asking for more is refused with the field's path,
never clamped; limits no host could honour are refused whatever the ceilings."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from compiler import Ceilings, ManifestError, compile_manifest
from tests.compiler.packs import dump, manifest

CEILINGS = Ceilings(
    memory_mib=1024, cpu_millicores=2000, quota_seconds=600, timeout_seconds=3600, allow_open=False
)


def refused(data: dict[str, Any], ceilings: Ceilings | None = CEILINGS) -> list[tuple[str, str]]:
    with pytest.raises(ManifestError) as info:
        compile_manifest(dump(data), ceilings=ceilings)
    return [(e.path, e.message) for e in info.value.errors]


def sandbox(**fields: Any) -> dict[str, Any]:
    return manifest({"sandbox": fields})


def test_within_the_ceilings_compiles() -> None:
    data = sandbox(memoryLimitMiB=1024, cpuLimitMillicores=2000, quotaSeconds=600)
    data["spec"]["steps"][0]["run"]["timeoutSeconds"] = 3600
    compiled = compile_manifest(dump(data), ceilings=CEILINGS)
    assert compiled.plan.sandbox.memoryLimitMiB == 1024  # as asked, not clamped


@pytest.mark.parametrize(
    ("fields", "path", "words"),
    [
        ({"memoryLimitMiB": 1025}, "spec.sandbox.memoryLimitMiB", "1025 MiB is more than"),
        ({"cpuLimitMillicores": 4000}, "spec.sandbox.cpuLimitMillicores", "(2000 millicores)"),
        ({"quotaSeconds": 601}, "spec.sandbox.quotaSeconds", "allows (600s)"),
        ({"mode": "open"}, "spec.sandbox.mode", "`open` is not allowed"),
    ],
)
def test_above_a_ceiling_is_refused_with_the_path(
    fields: dict[str, Any], path: str, words: str
) -> None:
    [(where, message)] = refused(sandbox(**fields))
    assert where == path
    assert words in message


def test_every_excess_is_reported_at_once() -> None:
    paths = [p for p, _ in refused(sandbox(mode="open", memoryLimitMiB=99999, quotaSeconds=9999))]
    assert paths == [
        "spec.sandbox.mode",
        "spec.sandbox.memoryLimitMiB",
        "spec.sandbox.quotaSeconds",
    ]


def test_step_timeouts_are_checked_where_they_are_nested() -> None:
    data = manifest(
        {
            "steps": [
                {"id": "ok", "run": {"uses": "builtin:noop", "timeoutSeconds": 60}},
                {
                    "id": "fan",
                    "parallel": {
                        "steps": [
                            {"id": "slow", "run": {"uses": "builtin:noop", "timeoutSeconds": 901}}
                        ]
                    },
                },
                {
                    "id": "each",
                    "map": {
                        "items": "{{ `[1]` }}",
                        "step": {"id": "t", "run": {"uses": "builtin:noop"}},
                    },
                },
            ]
        }
    )
    errors = refused(data, replace(CEILINGS, timeout_seconds=900))
    assert [p for p, _ in errors] == [
        "spec.steps[1].parallel.steps[0].run.timeoutSeconds",
        "spec.steps[2].map.step.run.timeoutSeconds",
    ]
    assert "the default of 3600s" in errors[1][1]


def test_open_is_allowed_when_the_operator_allows_it() -> None:
    allowing = Ceilings(allow_open=True)
    assert (
        compile_manifest(dump(sandbox(mode="open")), ceilings=allowing).plan.sandbox.mode == "open"
    )


def test_no_ceilings_given_means_only_the_hard_bounds() -> None:
    compiled = compile_manifest(dump(sandbox(mode="open", memoryLimitMiB=65536)))
    assert compiled.plan.sandbox.memoryLimitMiB == 65536


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"mode": "wide-open"}, "spec.sandbox.mode"),
        ({"memoryLimitMiB": -1}, "spec.sandbox.memoryLimitMiB"),
        ({"memoryLimitMiB": 0}, "spec.sandbox.memoryLimitMiB"),
        ({"cpuLimitMillicores": 10**12}, "spec.sandbox.cpuLimitMillicores"),
        ({"quotaSeconds": 10**9}, "spec.sandbox.quotaSeconds"),
        ({"egressAllowlist": ["*"]}, "spec.sandbox.egressAllowlist[0]"),
        ({"egressAllowlist": ["ok.example.com", "http://x/"]}, "spec.sandbox.egressAllowlist[1]"),
        ({"egressAllowlist": "api.example.com"}, "spec.sandbox.egressAllowlist"),
    ],
)
def test_unknown_mode_and_absurd_limits_are_refused(fields: dict[str, Any], path: str) -> None:
    assert path in [p for p, _ in refused(sandbox(**fields), ceilings=None)]
