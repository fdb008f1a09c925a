"""Validation: every rule of DESIGN.md section 2, each with the exact JSON path it reports."""

from __future__ import annotations

import time
from typing import Any

import pytest

from compiler import ManifestError, compile_manifest, load_manifest
from compiler.loader import MAX_MANIFEST_BYTES, MAX_NESTING
from tests.compiler.packs import BASE, ONE_PASS, dump, errors_of, manifest, paths_of

NOOP = {"uses": "builtin:noop"}


def run(step_id: str, **body: Any) -> dict[str, Any]:
    return {"id": step_id, "run": {"uses": "builtin:echo", **body}}


def echo(step_id: str, **with_: Any) -> dict[str, Any]:
    return run(step_id, **{"with": with_})


APPROVALS = {"approvals": [{"id": "ok", "grants": ["packs.approve"]}]}
POLICIES = {"policies": [{"id": "p", "condition": True}]}
INPUTS = {
    "inputs": [
        {"name": "target", "type": "string", "required": True},
        {"name": "count", "type": "integer", "default": 1},
        {
            "name": "cfg",
            "type": "object",
            "default": {"port": 80},
            "schema": {
                "type": "object",
                "properties": {"port": {"type": "integer", "maximum": 65535}},
                "required": ["port"],
            },
        },
    ]
}

# (rule, manifest dict, inputs, expected path, a word the message contains)
CASES: list[tuple[str, dict[str, Any], dict[str, Any] | None, str, str]] = [
    ("wrong apiVersion", manifest(apiVersion="stellaops.io/pack.v2"), None, "apiVersion", ""),
    ("wrong kind", manifest(kind="Pack"), None, "kind", ""),
    (
        "missing metadata",
        {k: v for k, v in BASE.items() if k != "metadata"},
        None,
        "metadata",
        "required",
    ),
    (
        "pack name with a quote",
        manifest(metadata={"name": "it's", "version": "1"}),
        None,
        "metadata.name",
        "quotes, backslashes",
    ),
    (
        "pack name with a backslash",
        manifest(metadata={"name": "a\\b", "version": "1"}),
        None,
        "metadata.name",
        "quotes, backslashes",
    ),
    (
        "lone surrogate in an input value",
        manifest(INPUTS),
        {"target": "x\ud800"},
        "inputs.target",
        "surrogate",
    ),
    ("unknown top-level key", manifest(extra=1), None, "extra", "unknown key"),
    ("unknown spec key", manifest({"stepz": []}), None, "spec.stepz", "unknown key"),
    (
        "unknown metadata key",
        manifest(metadata={"name": "x", "version": "1", "colour": "red"}),
        None,
        "metadata.colour",
        "unknown key",
    ),
    (
        "unknown step key",
        manifest({"steps": [{"id": "a", "run": NOOP, "retry": 3}]}),
        None,
        "spec.steps[0].retry",
        "unknown key",
    ),
    (
        "unknown run key",
        manifest({"steps": [{"id": "a", "run": {**NOOP, "args": []}}]}),
        None,
        "spec.steps[0].run.args",
        "unknown key",
    ),
    (
        "unknown key deep inside",
        manifest(
            {
                "steps": [
                    {
                        "id": "p",
                        "parallel": {
                            "steps": [
                                {
                                    "id": "m",
                                    "map": {
                                        "items": [1],
                                        "step": {"id": "t", "run": {**NOOP, "x": 1}},
                                    },
                                }
                            ]
                        },
                    }
                ]
            }
        ),
        None,
        "spec.steps[0].parallel.steps[0].map.step.run.x",
        "unknown key",
    ),
    (
        "step without a kind",
        manifest({"steps": [{"id": "a"}]}),
        None,
        "spec.steps[0]",
        "found none",
    ),
    (
        "step with two kinds",
        manifest(
            {"steps": [{"id": "a", "run": NOOP, "parallel": {"steps": [{"id": "b", "run": NOOP}]}}]}
        ),
        None,
        "spec.steps[0]",
        "found run, parallel",
    ),
    (
        "gate with two kinds",
        manifest(
            {
                **APPROVALS,
                **POLICIES,
                "steps": [
                    {"id": "g", "gate": {"approval": {"id": "ok"}, "policy": {"policy": "p"}}}
                ],
            }
        ),
        None,
        "spec.steps[0].gate",
        "exactly one",
    ),
    (
        "bad step id",
        manifest({"steps": [{"id": "a b", "run": NOOP}]}),
        None,
        "spec.steps[0].id",
        "pattern",
    ),
    (
        "duplicate step id",
        manifest({"steps": [run("a"), run("a")]}),
        None,
        "spec.steps[1].id",
        "duplicate step id 'a' (first at spec.steps[0].id)",
    ),
    (
        "duplicate step id, nested",
        manifest({"steps": [run("a"), {"id": "p", "parallel": {"steps": [run("b"), run("a")]}}]}),
        None,
        "spec.steps[1].parallel.steps[1].id",
        "duplicate step id",
    ),
    (
        "duplicate step id in a map template",
        manifest({"steps": [run("a"), {"id": "m", "map": {"items": [1], "step": run("a")}}]}),
        None,
        "spec.steps[1].map.step.id",
        "duplicate",
    ),
    (
        "duplicate approval id",
        manifest({"approvals": [{"id": "x"}, {"id": "x"}]}),
        None,
        "spec.approvals[1].id",
        "duplicate approval",
    ),
    (
        "duplicate input name",
        manifest({"inputs": [{"name": "x"}, {"name": "x"}]}),
        None,
        "spec.inputs[1].name",
        "duplicate input",
    ),
    (
        "undeclared approval",
        manifest(
            {**APPROVALS, "steps": [run("a"), {"id": "g", "gate": {"approval": {"id": "nope"}}}]}
        ),
        None,
        "spec.steps[1].gate.approval.id",
        "unknown approval 'nope' (known: ok)",
    ),
    (
        "undeclared policy",
        manifest({**POLICIES, "steps": [{"id": "g", "gate": {"policy": {"policy": "nope"}}}]}),
        None,
        "spec.steps[0].gate.policy.policy",
        "unknown policy 'nope'",
    ),
    (
        "policy version mismatch",
        manifest(
            {
                **POLICIES,
                "steps": [{"id": "g", "gate": {"policy": {"policy": "p", "version": "7"}}}],
            }
        ),
        None,
        "spec.steps[0].gate.policy.version",
        "declared with version '1'",
    ),
    (
        "override approval undeclared",
        manifest(
            {
                **POLICIES,
                "steps": [
                    {
                        "id": "g",
                        "gate": {
                            "policy": {
                                "policy": "p",
                                "failureAction": "requestOverride",
                                "approvalId": "nope",
                            }
                        },
                    }
                ],
            }
        ),
        None,
        "spec.steps[0].gate.policy.approvalId",
        "unknown approval",
    ),
    (
        "requestOverride without approvalId",
        manifest(
            {
                **POLICIES,
                "steps": [
                    {
                        "id": "g",
                        "gate": {"policy": {"policy": "p", "failureAction": "requestOverride"}},
                    }
                ],
            }
        ),
        None,
        "spec.steps[0].gate.policy.approvalId",
        "needs approvalId",
    ),
    (
        "else without branch",
        manifest(
            {
                **POLICIES,
                "steps": [{"id": "g", "gate": {"policy": {"policy": "p", "else": [run("e")]}}}],
            }
        ),
        None,
        "spec.steps[0].gate.policy.else",
        "failureAction branch",
    ),
    (
        "unknown failureAction",
        manifest(
            {
                **POLICIES,
                "steps": [
                    {"id": "g", "gate": {"policy": {"policy": "p", "failureAction": "explode"}}}
                ],
            }
        ),
        None,
        "spec.steps[0].gate.policy.failureAction",
        "",
    ),
    (
        "expression does not parse: when",
        manifest({"steps": [{"id": "a", "when": "{{ inputs.[ }}", "run": NOOP}]}),
        None,
        "spec.steps[0].when",
        "invalid expression",
    ),
    (
        "expression does not parse: with",
        manifest({"steps": [echo("a", x="a {{ ] }} b")]}),
        None,
        "spec.steps[0].run.with.x",
        "invalid expression",
    ),
    (
        "expression does not parse: nested with",
        manifest({"steps": [echo("a", x={"y": ["{{ ok }}", "{{ == }}"]})]}),
        None,
        "spec.steps[0].run.with.x.y[0]",
        "unknown name",
    ),
    (
        "expression does not parse: map items",
        manifest({"steps": [{"id": "m", "map": {"items": "{{ [ }}", "step": run("t")}}]}),
        None,
        "spec.steps[0].map.items",
        "invalid expression",
    ),
    (
        "empty expression",
        manifest({"steps": [echo("a", x="{{ }}")]}),
        None,
        "spec.steps[0].run.with.x",
        "empty expression",
    ),
    (
        "unknown function",
        manifest({"steps": [echo("a", x="{{ shout(inputs) }}")]}),
        None,
        "spec.steps[0].run.with.x",
        "unknown function 'shout'",
    ),
    (
        "unknown scope name",
        manifest({"steps": [echo("a", x="{{ item }}")]}),
        None,
        "spec.steps[0].run.with.x",
        "unknown name 'item'",
    ),
    (
        "unknown input",
        manifest({**INPUTS, "steps": [echo("a", x="{{ inputs.tagret }}")]}),
        {"target": "t"},
        "spec.steps[0].run.with.x",
        "unknown input 'tagret'",
    ),
    (
        "unknown input in a condition",
        manifest(
            {
                "steps": [
                    {
                        "id": "c",
                        "conditional": {
                            "branches": [
                                {"condition": "{{ inputs.mode == 'x' }}", "steps": [run("b")]}
                            ]
                        },
                    }
                ]
            }
        ),
        None,
        "spec.steps[0].conditional.branches[0].condition",
        "unknown input 'mode'",
    ),
    (
        "unknown step",
        manifest({"steps": [echo("a", x="{{ steps.zzz.outputs }}")]}),
        None,
        "spec.steps[0].run.with.x",
        "unknown step 'zzz'",
    ),
    (
        "step that runs later",
        manifest({"steps": [echo("a", x="{{ steps.b.outputs }}"), run("b")]}),
        None,
        "spec.steps[0].run.with.x",
        "does not run before this point",
    ),
    (
        "step reading itself",
        manifest({"steps": [{"id": "a", "when": "{{ steps.a.status }}", "run": NOOP}]}),
        None,
        "spec.steps[0].when",
        "does not run before",
    ),
    (
        "parallel sibling",
        manifest(
            {
                "steps": [
                    {
                        "id": "p",
                        "parallel": {"steps": [run("x"), echo("y", v="{{ steps.x.outputs }}")]},
                    }
                ]
            }
        ),
        None,
        "spec.steps[0].parallel.steps[1].run.with.v",
        "does not run before",
    ),
    (
        "parallel sibling, earlier in the list",
        manifest(
            {
                "steps": [
                    {
                        "id": "p",
                        "parallel": {"steps": [echo("x", v="{{ steps.y.status }}"), run("y")]},
                    }
                ]
            }
        ),
        None,
        "spec.steps[0].parallel.steps[0].run.with.v",
        "does not run before",
    ),
    (
        "map iteration read from outside",
        manifest(
            {
                "steps": [
                    {"id": "m", "map": {"items": [1], "step": run("t")}},
                    echo("after", v="{{ steps.t.outputs }}"),
                ]
            }
        ),
        None,
        "spec.steps[1].run.with.v",
        "does not run before",
    ),
    (
        "other branch's step",
        manifest(
            {
                "steps": [
                    {
                        "id": "c",
                        "conditional": {
                            "branches": [{"condition": True, "steps": [run("x")]}],
                            "else": [echo("y", v="{{ steps.x.status }}")],
                        },
                    }
                ]
            }
        ),
        None,
        "spec.steps[0].conditional.else[0].run.with.v",
        "does not run before",
    ),
    ("missing required input", manifest(INPUTS), None, "inputs.target", "required input"),
    (
        "input of the wrong type",
        manifest(INPUTS),
        {"target": "t", "count": "3"},
        "inputs.count",
        "must be an integer, got str",
    ),
    (
        "bool is not an integer",
        manifest(INPUTS),
        {"target": "t", "count": True},
        "inputs.count",
        "must be an integer",
    ),
    (
        "NaN is not a number",
        manifest({"inputs": [{"name": "n", "type": "number"}]}),
        {"n": float("nan")},
        "inputs.n",
        "must be a number",
    ),
    (
        "input the pack does not declare",
        manifest(INPUTS),
        {"target": "t", "colour": "red"},
        "inputs.colour",
        "unknown input",
    ),
    (
        "input failing its JSON schema",
        manifest(INPUTS),
        {"target": "t", "cfg": {"port": 70000}},
        "inputs.cfg.port",
        "70000 is greater than the maximum of 65535",
    ),
    (
        "input missing a schema property",
        manifest(INPUTS),
        {"target": "t", "cfg": {}},
        "inputs.cfg",
        "'port' is a required property",
    ),
    (
        "default failing its type",
        manifest({"inputs": [{"name": "n", "type": "integer", "default": "x"}]}),
        None,
        "spec.inputs[0].default",
        "must be an integer",
    ),
    (
        "invalid JSON schema",
        manifest({"inputs": [{"name": "n", "schema": {"type": 5}}]}),
        None,
        "spec.inputs[0].schema",
        "not a valid JSON Schema",
    ),
    (
        "unresolvable $ref",
        manifest(
            {
                "inputs": [
                    {
                        "name": "n",
                        "type": "object",
                        "default": {},
                        "schema": {"$ref": "https://example.com/x.json"},
                    }
                ]
            }
        ),
        None,
        "spec.inputs[0].default",
        "cannot check against the input's schema",
    ),
    (
        "bad regex in a schema",
        manifest({"inputs": [{"name": "n", "default": "a", "schema": {"pattern": "("}}]}),
        None,
        "spec.inputs[0].default",
        "cannot check",
    ),
    (
        "secret in a condition",
        manifest(
            {
                "secrets": [{"name": "TOKEN"}],
                "steps": [{"id": "a", "when": "{{ secrets.TOKEN }}", "run": NOOP}],
            }
        ),
        None,
        "spec.steps[0].when",
        "secrets may only be used",
    ),
    (
        "secret in map items",
        manifest(
            {
                "secrets": [{"name": "T"}],
                "steps": [{"id": "m", "map": {"items": "{{ secrets.T }}", "step": run("t")}}],
            }
        ),
        None,
        "spec.steps[0].map.items",
        "secrets may only be used",
    ),
    (
        "secret in an output",
        manifest(
            {
                "secrets": [{"name": "T"}],
                "outputs": [{"name": "o", "type": "object", "expression": "{{ secrets.T }}"}],
            }
        ),
        None,
        "spec.outputs[0].expression",
        "secrets may only be used",
    ),
    (
        "secret in a policy",
        manifest(
            {
                "secrets": [{"name": "T"}],
                "policies": [{"id": "p", "condition": "{{ secrets.T == 'x' }}"}],
            }
        ),
        None,
        "spec.policies[0].condition",
        "secrets may only be used",
    ),
    (
        "secret inside a larger expression in with",
        manifest(
            {"secrets": [{"name": "T"}], "steps": [echo("a", x="{{ join('', [secrets.T]) }}")]}
        ),
        None,
        "spec.steps[0].run.with.x",
        "secrets may only be used",
    ),
    (
        "undeclared secret in with",
        manifest({"steps": [echo("a", x="{{ secrets.TOKEN }}")]}),
        None,
        "spec.steps[0].run.with.x",
        "unknown secret 'TOKEN'",
    ),
    (
        "loop range past maxIterations",
        manifest(
            {
                "steps": [
                    {
                        "id": "l",
                        "loop": {
                            "items": {"range": {"end": 11}},
                            "maxIterations": 10,
                            "steps": [run("b")],
                        },
                    }
                ]
            }
        ),
        None,
        "spec.steps[0].loop.items.range",
        "range has 11 items",
    ),
    (
        "astronomical loop range",
        manifest(
            {
                "steps": [
                    {"id": "l", "loop": {"items": {"range": {"end": 10**30}}, "steps": [run("b")]}}
                ]
            }
        ),
        None,
        "spec.steps[0].loop.items.range",
        "more than maxIterations",
    ),
    (
        "loop with two item sources",
        manifest(
            {
                "steps": [
                    {
                        "id": "l",
                        "loop": {
                            "items": {"range": {"end": 1}, "static": [1]},
                            "steps": [run("b")],
                        },
                    }
                ]
            }
        ),
        None,
        "spec.steps[0].loop.items",
        "exactly one",
    ),
    (
        "loop iterator hiding inputs",
        manifest(
            {
                "steps": [
                    {
                        "id": "l",
                        "loop": {
                            "items": {"static": [1]},
                            "iterator": "inputs",
                            "steps": [run("b")],
                        },
                    }
                ]
            }
        ),
        None,
        "spec.steps[0].loop.iterator",
        "reserved",
    ),
    (
        "maxIterations cap",
        manifest(
            {
                "steps": [
                    {
                        "id": "l",
                        "loop": {
                            "items": {"static": [1]},
                            "maxIterations": 10001,
                            "steps": [run("b")],
                        },
                    }
                ]
            }
        ),
        None,
        "spec.steps[0].loop.maxIterations",
        "less than or equal to 10000",
    ),
    ("empty steps", manifest({"steps": []}), None, "spec.steps", "at least 1"),
    (
        "bad executor name",
        manifest({"steps": [{"id": "a", "run": {"uses": "noop"}}]}),
        None,
        "spec.steps[0].run.uses",
        "pattern",
    ),
    (
        "file output escaping the workspace",
        manifest({"outputs": [{"name": "o", "type": "file", "path": "../etc/passwd"}]}),
        None,
        "spec.outputs[0].path",
        "relative path inside",
    ),
    (
        "object output without expression",
        manifest({"outputs": [{"name": "o", "type": "object"}]}),
        None,
        "spec.outputs[0]",
        "needs `expression`",
    ),
    (
        "when of the wrong type",
        manifest({"steps": [{"id": "a", "when": 5, "run": NOOP}]}),
        None,
        "spec.steps[0].when",
        "",
    ),
]


@pytest.mark.parametrize(
    ("data", "inputs", "path", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_rule_reports_its_path(
    data: dict[str, Any], inputs: dict[str, Any] | None, path: str, message: str
) -> None:
    errors = errors_of(dump(data), inputs)
    assert any(p == path and message in m for p, m in errors), errors


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 1\na: 2\n", "duplicate key 'a' (line 2, column 1)"),
        ("a: &x [1]\nb: *x\n", "YAML aliases are not allowed (line 2, column 4)"),
        ("<<: {a: 1}\n", "YAML merge keys are not allowed"),
        ("a: !!python/object:os.system x\n", "YAML tag"),
        ("a: !!set {x, y}\n", "YAML tag 'tag:yaml.org,2002:set' is not allowed"),
        ("a: !!binary aGk=\n", "YAML tag 'tag:yaml.org,2002:binary' is not allowed"),
        ("a: .nan\n", "NaN and infinity are not allowed"),
        ("a: -.inf\n", "NaN and infinity are not allowed"),
        ("? [a]\n: b\n", "mapping keys must be scalars"),
        ("a: 1\n---\nb: 2\n", "expected a single YAML document"),
        ("a: [1, 2\n", "invalid YAML"),
        ("\t- a: b\n", "invalid YAML"),
        ("", "manifest is empty"),
        ("# only a comment\n", "manifest is empty"),
        ("- a\n- b\n", "manifest must be a YAML mapping"),
        (b"apiVersion: \xff\n", "not valid UTF-8"),
    ],
)
def test_yaml_problems_are_manifest_errors(text: str | bytes, message: str) -> None:
    errors = errors_of(text)
    assert len(errors) == 1
    assert errors[0][0] == ""
    assert message in errors[0][1]


def test_duplicate_keys_in_a_step_are_refused() -> None:
    text = dump(manifest()).replace(
        "uses: builtin:noop", "uses: builtin:noop\n      uses: builtin:echo"
    )
    assert "duplicate key 'uses'" in errors_of(text)[0][1]


def test_alias_bomb_is_refused_fast() -> None:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    bomb = "\n".join(lines) + "\n" + dump(manifest())
    started = time.perf_counter()
    errors = errors_of(bomb)
    assert time.perf_counter() - started < 0.5
    assert errors == [("", "YAML aliases are not allowed (line 2, column 10)")]


def test_size_cap() -> None:
    padding = "# " + "x" * 1000 + "\n"
    text = padding * (MAX_MANIFEST_BYTES // len(padding) + 1) + dump(manifest())
    assert errors_of(text) == [("", f"manifest is larger than {MAX_MANIFEST_BYTES} bytes")]
    assert errors_of(text.encode()) == [("", f"manifest is larger than {MAX_MANIFEST_BYTES} bytes")]
    # A caller may lower the cap.
    with pytest.raises(ManifestError, match="larger than 100 bytes"):
        compile_manifest(dump(manifest()), max_bytes=100)


@pytest.mark.parametrize(
    "text",
    [
        "[" * 200_000,  # flow sequences: once crashed the C composer's stack
        "{a: " * 100_000,
        "- " * 200_000 + "x",
        "".join(f"{' ' * 2 * i}k{i}:\n" for i in range(150)) + " " * 300 + "v",
    ],
    ids=["flow-seq", "flow-map", "block-seq", "block-map"],
)
def test_nesting_cap(text: str) -> None:
    errors = errors_of(text)
    assert len(errors) == 1
    assert errors[0][0] == ""
    assert f"nested deeper than {MAX_NESTING} levels" in errors[0][1]


def test_nesting_within_the_cap_is_fine() -> None:
    # A real pack nests steps a dozen deep without coming near the cap.
    step: dict[str, Any] = run("leaf")
    for depth in range(12):
        step = {"id": f"p{depth}", "parallel": {"steps": [step]}}
    compile_manifest(dump(manifest({"steps": [step]})))


def test_every_error_is_reported_at_once() -> None:
    data = manifest(
        {
            **APPROVALS,
            "inputs": [{"name": "target", "required": True}],
            "steps": [
                echo("a", x="{{ steps.b.outputs }}"),
                run("b"),
                run("b"),
                {"id": "g", "gate": {"approval": {"id": "nope"}}},
                echo("c", y="{{ inputs.nope }}", z="{{ [ }}"),
            ],
        }
    )
    # In the order of the text; the given inputs' errors, not in it, last.
    assert paths_of(dump(data), {"target": 5}) == [
        "spec.steps[0].run.with.x",
        "spec.steps[2].id",
        "spec.steps[3].gate.approval.id",
        "spec.steps[4].run.with.y",
        "spec.steps[4].run.with.z",
        "inputs.target",
    ]


def test_structural_errors_are_all_reported() -> None:
    data = manifest(
        {"steps": [{"id": "a"}, {"id": "b", "run": {"uses": "x"}}, {"id": "c c", "run": NOOP}]},
        kind="Nope",
    )
    assert paths_of(dump(data)) == [
        "kind",
        "spec.steps[0]",
        "spec.steps[1].run.uses",
        "spec.steps[2].id",
    ]


def test_known_executors_are_checked_when_given() -> None:
    text = dump(manifest({"steps": [run("a"), {"id": "b", "run": {"uses": "custom:nope"}}]}))
    with pytest.raises(ManifestError) as info:
        compile_manifest(text, known_executors={"builtin:echo"})
    assert [e.path for e in info.value.errors] == ["spec.steps[1].run.uses"]


def test_dates_and_numbers_are_read_as_the_author_wrote_them() -> None:
    text = dump(manifest()).replace("version: 1.0.0", "version: 2024-01-01")
    assert load_manifest(text).metadata.version == "2024-01-01"
    text = dump(manifest()).replace("version: 1.0.0", "version: 1.5")
    assert load_manifest(text).metadata.version == "1.5"


CATALOG = {
    "builtin:echo": None,
    "builtin:sleep": {
        "type": "object",
        "properties": {"seconds": {"type": "number", "minimum": 0}},
        "required": ["seconds"],
        "additionalProperties": False,
    },
}


class TestExecutorCatalog:
    def test_a_misspelt_executor_is_refused_with_a_suggestion(self) -> None:
        text = dump(manifest({"steps": [{"id": "a", "run": {"uses": "builtin:ecoh"}}]}))
        [(path, message)] = errors_of_with(text, CATALOG)
        assert path == "spec.steps[0].run.uses"
        assert "did you mean 'builtin:echo'?" in message

    def test_an_unrelated_executor_gets_no_suggestion(self) -> None:
        text = dump(manifest({"steps": [{"id": "a", "run": {"uses": "builtin:scanner"}}]}))
        [(path, message)] = errors_of_with(text, CATALOG)
        assert path == "spec.steps[0].run.uses"
        assert "did you mean" not in message
        assert "docs/executors.md" in message

    def test_a_suggestion_compares_names_not_the_shared_prefix(self) -> None:
        # The contract's `builtin:build` was offered `builtin:fail`: alike only by `builtin:`.
        catalog = {**CATALOG, "builtin:fail": None, "builtin:shell": None}
        steps = [
            {"id": "a", "run": {"uses": "builtin:build"}},
            {"id": "b", "run": {"uses": "builtin:shel"}},
            {"id": "c", "run": {"uses": "acme:echo"}},
        ]
        found = dict(errors_of_with(dump(manifest({"steps": steps})), catalog))
        assert "did you mean" not in found["spec.steps[0].run.uses"]
        assert "did you mean 'builtin:shell'?" in found["spec.steps[1].run.uses"]
        assert "did you mean" not in found["spec.steps[2].run.uses"]

    def test_with_is_checked_against_the_schema(self) -> None:
        steps = [
            {"id": "a", "run": {"uses": "builtin:sleep", "with": {"second": 1}}},
            {"id": "b", "run": {"uses": "builtin:sleep", "with": {"seconds": "soon"}}},
            {"id": "c", "run": {"uses": "builtin:sleep", "with": {"seconds": -1}}},
        ]
        found = errors_of_with(dump(manifest({"steps": steps})), CATALOG)
        paths = [p for p, _ in found]
        assert "spec.steps[0].run.with" in paths
        assert any("did you mean 'seconds'?" in m for _, m in found)
        assert "spec.steps[1].run.with.seconds" in paths
        assert "spec.steps[2].run.with.seconds" in paths

    def test_an_expression_value_is_left_to_run_time(self) -> None:
        pack = manifest(
            {
                "inputs": [{"name": "n", "type": "number"}],
                "steps": [
                    {
                        "id": "a",
                        "run": {"uses": "builtin:sleep", "with": {"seconds": "{{ inputs.n }}"}},
                    }
                ],
            }
        )
        compile_manifest(dump(pack), {"n": 1}, known_executors=CATALOG)

    def test_any_with_for_an_executor_without_a_schema(self) -> None:
        pack = manifest({"steps": [echo("a", anything=[1, 2], goes={"x": 1})]})
        compile_manifest(dump(pack), known_executors=CATALOG)


def errors_of_with(text: str, catalog: Any) -> list[tuple[str, str]]:
    with pytest.raises(ManifestError) as info:
        compile_manifest(text, known_executors=catalog)
    return [(e.path, e.message) for e in info.value.errors]


# ------------------------------------------------------------------ one pass, located, did you mean


def located_errors(text: str) -> list[tuple[int | None, int | None, str, str]]:
    with pytest.raises(ManifestError) as info:
        compile_manifest(text)
    return [(e.line, e.column, e.path, e.message) for e in info.value.errors]


def test_an_unknown_key_hides_no_other_error() -> None:
    assert located_errors(ONE_PASS) == [
        (
            13,
            9,
            "spec.steps[0].run.timoutSeconds",
            "unknown key (did you mean 'timeoutSeconds'?)",
        ),
        (14, 7, "spec.steps[1].id", "duplicate step id 'build' (first at spec.steps[0].id)"),
        (
            17,
            7,
            "spec.steps[2].when",
            "unknown step 'biuld' (did you mean 'build'?) (known: build, ship)",
        ),
        (
            20,
            11,
            "spec.steps[2].gate.approval.id",
            "unknown approval 'relase' (did you mean 'release'?) (known: release)",
        ),
    ]


def test_load_manifest_locates_its_errors_too() -> None:
    with pytest.raises(ManifestError) as info:
        load_manifest(ONE_PASS.replace("  approvals:", "  aprovals:"))
    # load_manifest type-checks only: the unknown keys, in the order of the text.
    assert [(e.line, e.column, e.path, e.message) for e in info.value.errors] == [
        (7, 3, "spec.aprovals", "unknown key (did you mean 'approvals'?)"),
        (13, 9, "spec.steps[0].run.timoutSeconds", "unknown key (did you mean 'timeoutSeconds'?)"),
    ]


def test_a_key_far_from_any_known_one_gets_no_suggestion() -> None:
    text = ONE_PASS.replace("timoutSeconds: 5", "zzzz: 5")
    assert located_errors(text)[0] == (13, 9, "spec.steps[0].run.zzzz", "unknown key")


def test_flow_style_and_nested_lists_are_located() -> None:
    text = (
        "apiVersion: stellaops.io/pack.v1\n"
        "kind: TaskPack\n"
        "metadata: {name: demo, version: 1.0.0}\n"
        "spec:\n"
        "  steps:\n"
        "  - {id: a, run: {uses: builtin:noop}}\n"
        "  - id: p\n"
        "    parallel:\n"
        "      steps: [{id: a, run: {uses: builtin:noop, bogus: 1}}]\n"
    )
    assert [(line, col, path) for line, col, path, _ in located_errors(text)] == [
        (9, 16, "spec.steps[1].parallel.steps[0].id"),  # `a` again
        (9, 49, "spec.steps[1].parallel.steps[0].run.bogus"),
    ]


def test_errors_not_in_the_text_are_not_located() -> None:
    text = dump(manifest({"inputs": [{"name": "who", "type": "string", "required": True}]}))
    with pytest.raises(ManifestError) as info:
        compile_manifest(text, {"who": 1, "nobody": 2})
    errors = info.value.errors
    assert sorted(e.path for e in errors) == ["inputs.nobody", "inputs.who"]
    assert all(e.line is None and e.column is None for e in errors)


def test_a_null_step_kind_is_an_error_not_a_crash() -> None:
    # `gate: null` once passed the model's one-kind check and failed an assertion (a 500).
    text = dump(manifest({"steps": [{"id": "a", "gate": None}]}))
    assert errors_of(text) == [
        (
            "spec.steps[0]",
            "a step needs exactly one of run, parallel, map, loop, conditional, gate (found none)",
        )
    ]


def test_structural_errors_hide_no_later_error() -> None:
    # A wrong kind, bad metadata, a bad sandbox and a step with no kind are read as stand-ins,
    # so the duplicate id and the unknown step behind them are found in the same pass.
    data = manifest(
        {
            "sandbox": {"memoryLimitMiB": "lots"},
            "steps": [
                {"id": "a"},
                run("a"),
                echo("b", x="{{ steps.nope.outputs }}"),
            ],
        },
        kind="Pack",
        metadata={"name": "", "version": "1"},
    )
    assert paths_of(dump(data)) == [
        "kind",
        "metadata.name",
        "spec.steps[0]",
        "spec.steps[1].id",
        "spec.steps[2].run.with.x",
        "spec.sandbox.memoryLimitMiB",  # written after the steps
    ]


def test_a_stand_in_step_makes_no_error_of_its_own() -> None:
    # A step whose `uses` (required) is broken is read as a stand-in that keeps its id: a
    # reference to it is no "unknown step", and the stand-in's executor is not checked against
    # a catalog that lacks it.
    data = manifest(
        {
            "steps": [
                {"id": "a", "run": {"uses": 5}},
                echo("b", x="{{ steps.a.outputs }}"),
            ]
        }
    )
    with pytest.raises(ManifestError) as info:
        compile_manifest(dump(data), known_executors={"builtin:echo"})
    assert [e.path for e in info.value.errors] == ["spec.steps[0].run.uses"]


def test_a_bad_optional_field_is_read_as_unwritten() -> None:
    # The rest of the step (its `with`), a parallel's steps and the inputs are still checked.
    data = manifest(
        {
            "inputs": [{"name": "who", "type": "strin"}],
            "steps": [
                echo("a", x="{{ inputs.nobody }}") | {"when": "{{ inputs.who }}"},
                {"id": "p", "parallel": {"maxParallel": "x", "steps": [run("a")]}},
            ],
        },
        metadata={"name": "n", "version": "1", "tags": [1]},
    )
    data["spec"]["steps"][0]["run"]["timeoutSeconds"] = "soon"
    assert paths_of(dump(data)) == [
        "metadata.tags[0]",
        "spec.steps[0].run.with.x",  # `who` is known: the input is read without its type
        "spec.steps[0].run.timeoutSeconds",
        "spec.steps[1].parallel.maxParallel",
        "spec.steps[1].parallel.steps[0].id",  # `a` again
        "spec.inputs[0].type",  # written after the steps
    ]


def test_a_step_with_a_bad_id_is_not_listed_among_the_known() -> None:
    data = manifest({"steps": [run("c c"), echo("b", x="{{ steps.c.outputs }}")]})
    assert errors_of(dump(data)) == [
        ("spec.steps[0].id", "String should match pattern '^[a-zA-Z0-9_-]+$'"),
        ("spec.steps[1].run.with.x", "unknown step 'c' (known: b)"),
    ]


def test_a_step_that_holds_steps_and_lacks_a_required_field_is_not_replaced() -> None:
    # A stand-in would lose the branch's steps, and a reference to one would read as unknown:
    # the structural error alone is reported (the later checks wait for it to be fixed).
    data = manifest(
        {
            "steps": [
                {"id": "c", "conditional": {"branches": [{"steps": [run("inner")]}]}},
                echo("b", x="{{ steps.inner.outputs }}"),
            ]
        }
    )
    assert paths_of(dump(data)) == ["spec.steps[0].conditional.branches[0].condition"]


def test_a_misspelt_value_of_a_fixed_set_gets_a_suggestion() -> None:
    data = manifest({"inputs": [{"name": "who", "type": "strin"}]}, kind="TaskPak")
    assert errors_of(dump(data)) == [
        ("kind", "Input should be 'TaskPack'"),  # one value: named already
        (
            "spec.inputs[0].type",
            "Input should be 'string', 'number', 'integer', 'boolean', 'object' or 'array' "
            "(did you mean 'string'?)",
        ),
    ]
