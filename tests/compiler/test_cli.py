"""The `taskrunner` pack commands: validate, plan, simulate; their output and exit codes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cli.main import EXIT_ERROR, EXIT_INVALID, EXIT_OK, build_parser, main
from compiler import compile_manifest
from tests.compiler.conftest import CliRunner
from tests.compiler.packs import EXAMPLES, ONE_PASS, dump, example, manifest

CREATE_RUN = str(EXAMPLES / "contract" / "create-run.yaml")
BASIC = str(EXAMPLES / "contract" / "basic-simulation.yaml")


def invoke(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------ through the installed script


def test_script_simulates_a_pack(taskrunner: CliRunner) -> None:
    result = taskrunner("simulate", CREATE_RUN, "--any-executor")
    assert result.returncode == EXIT_OK, result.stderr
    body = json.loads(result.stdout)
    assert body["hasPendingApprovals"] is True
    assert body["steps"][1]["status"] == "RequiresApproval"
    assert body["planHash"] == compile_manifest(example("contract/create-run.yaml")).plan_hash


def test_script_reports_validation_errors_with_exit_2(taskrunner: CliRunner) -> None:
    bad = dump(manifest({"steps": [{"id": "a"}, {"id": "a", "run": {"uses": "builtin:noop"}}]}))
    result = taskrunner("validate", "-", stdin=bad)
    assert result.returncode == EXIT_INVALID
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "<stdin>:8:5: spec.steps[0]: a step needs exactly one of run, parallel, map, loop, "
        "conditional, gate (found none)",
        # The broken step keeps its id for the later checks: its duplicate is found as well.
        "<stdin>:9:5: spec.steps[1].id: duplicate step id 'a' (first at spec.steps[0].id)",
    ]


def test_script_prints_every_error_at_its_line_and_column(
    taskrunner: CliRunner, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(ONE_PASS)
    result = taskrunner("validate", str(bad))
    assert (result.returncode, result.stdout) == (EXIT_INVALID, "")
    assert result.stderr.splitlines() == [
        f"{bad}:13:9: spec.steps[0].run.timoutSeconds: unknown key (did you mean "
        "'timeoutSeconds'?)",
        f"{bad}:14:7: spec.steps[1].id: duplicate step id 'build' (first at spec.steps[0].id)",
        f"{bad}:17:7: spec.steps[2].when: unknown step 'biuld' (did you mean 'build'?) (known: "
        "build, ship)",
        f"{bad}:20:11: spec.steps[2].gate.approval.id: unknown approval 'relase' (did you mean "
        "'release'?) (known: release)",
    ]
    # plan and simulate compile the same way, and name standard input `<stdin>`.
    for command in ("plan", "simulate"):
        result = taskrunner(command, "-", stdin=ONE_PASS)
        assert result.returncode == EXIT_INVALID
        assert [line.split(": ")[0] for line in result.stderr.splitlines()] == [
            "<stdin>:13:9",
            "<stdin>:14:7",
            "<stdin>:17:7",
            "<stdin>:20:11",
        ]


def test_script_reports_other_errors_in_one_line_with_exit_1(taskrunner: CliRunner) -> None:
    result = taskrunner("plan", "/no/such/pack.yaml")
    assert result.returncode == EXIT_ERROR
    assert (
        result.stderr
        == "taskrunner: error: cannot read pack /no/such/pack.yaml: No such file or directory\n"
    )
    assert "Traceback" not in result.stderr


def test_script_plan_reads_stdin_and_inline_inputs(taskrunner: CliRunner) -> None:
    result = taskrunner(
        "plan",
        "-",
        "--any-executor",
        "--inputs",
        '{"target": "x"}',
        stdin=example("contract/basic-simulation.yaml"),
    )
    assert result.returncode == EXIT_OK, result.stderr
    expected = compile_manifest(example("contract/basic-simulation.yaml"), {"target": "x"})
    assert f"planHash: {expected.plan_hash}" in result.stderr.splitlines()
    # stdout is one JSON document, so `taskrunner plan - | jq` works.
    assert json.loads(result.stdout)["inputs"] == {"target": "x"}


def test_module_entry_point_works_too(root: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "validate", "/no/such/file"],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=60,
        check=False,
    )
    assert result.returncode == EXIT_ERROR
    assert result.stderr.startswith("taskrunner: error: cannot read pack")


# ------------------------------------------------------------------ in process


def test_contract_example_needs_its_executors(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(capsys, "simulate", BASIC, "-i", '{"target": "t"}')
    assert (code, out) == (EXIT_INVALID, "")
    # The line of `uses:` in the example (its header may grow), the column of the key.
    line = Path(BASIC).read_text().splitlines().index("        uses: builtin:scanner") + 1
    assert err.startswith(
        f"{BASIC}:{line}:9: spec.steps[0].run.uses: unknown executor 'builtin:scanner'"
    )
    assert "docs/executors.md" in err


def test_misspelt_executor_is_caught_with_a_suggestion(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pack = tmp_path / "pack.yaml"
    pack.write_text(example("run.yaml").replace("uses: builtin:echo", "uses: builtin:ecoh"))
    code, _, err = invoke(capsys, "validate", str(pack))
    assert code == EXIT_INVALID
    assert "did you mean 'builtin:echo'?" in err


def test_validate_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert invoke(capsys, "validate", CREATE_RUN, "--any-executor") == (
        EXIT_OK,
        "valid: deploy-app 2.0.0, 3 steps\n",
        "",
    )


def test_validate_without_inputs_does_not_ask_for_required_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = invoke(capsys, "validate", BASIC, "--any-executor")
    assert (code, out) == (EXIT_OK, "valid: scan-deploy 1.0.0, inputs not checked\n")


def test_validate_with_inputs_checks_them(capsys: pytest.CaptureFixture[str]) -> None:
    assert invoke(capsys, "validate", BASIC, "--any-executor", "--inputs", "{}") == (
        EXIT_INVALID,
        "",
        "inputs.target: required input is missing\n",
    )
    assert invoke(capsys, "validate", BASIC, "--any-executor", "-i", '{"target": "t", "x": 1}')[
        2
    ] == ("inputs.x: unknown input (declared: target)\n")


def test_validate_keeps_manifest_errors_when_inputs_are_not_given(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = manifest(
        {"inputs": [{"name": "n", "type": "integer", "default": "x", "required": True}]}
    )
    pack = tmp_path / "pack.yaml"
    pack.write_text(dump(data))
    assert invoke(capsys, "validate", str(pack)) == (
        EXIT_INVALID,
        "",
        f"{pack}:14:5: spec.inputs[0].default: must be an integer, got str\n",
    )


def test_every_error_is_printed_one_per_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pack = tmp_path / "pack.yaml"
    pack.write_text(
        dump(
            manifest(
                {
                    "steps": [
                        {
                            "id": "a",
                            "when": "{{ [ }}",
                            "run": {"uses": "builtin:echo", "with": {"x": "{{ inputs.nope }}"}},
                        }
                    ]
                },
                kind="Nope",
            )
        )
    )
    code, out, err = invoke(capsys, "plan", str(pack))
    assert (code, out) == (EXIT_INVALID, "")
    # A wrong kind no longer hides the steps' errors: all three, in the order of the text.
    assert [line.split(": ", 2)[:2] for line in err.splitlines()] == [
        [f"{pack}:2:1", "kind"],
        [f"{pack}:9:5", "spec.steps[0].when"],
        [f"{pack}:13:9", "spec.steps[0].run.with.x"],
    ]


def test_yaml_errors_have_no_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pack = tmp_path / "pack.yaml"
    pack.write_text("a: 1\na: 2\n")
    assert invoke(capsys, "validate", str(pack)) == (
        EXIT_INVALID,
        "",
        "duplicate key 'a' (line 2, column 1)\n",
    )


def test_plan_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, rest, err = invoke(capsys, "plan", CREATE_RUN, "--any-executor")
    assert code == EXIT_OK
    assert re.fullmatch(r"planHash: sha256:[a-f0-9]{64}\n", err)
    plan = json.loads(rest)
    assert [s["id"] for s in plan["steps"]] == ["build", "approval", "deploy"]
    assert rest.startswith("{\n  ")  # pretty


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_inputs_from_a_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, suffix: str
) -> None:
    given = tmp_path / f"inputs{suffix}"
    given.write_text('{"target": "from-file"}' if suffix == ".json" else "target: from-file\n")
    code, out, _ = invoke(capsys, "plan", BASIC, "--any-executor", "--inputs", str(given))
    assert code == EXIT_OK
    assert json.loads(out)["inputs"] == {"target": "from-file"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{not json", "--inputs is not valid JSON"),
        ('{"n": NaN}', "--inputs is not valid JSON: NaN is not allowed"),
        ("/no/such/inputs.json", "cannot read --inputs file /no/such/inputs.json"),
    ],
)
def test_bad_inputs_are_exit_1(
    capsys: pytest.CaptureFixture[str], value: str, message: str
) -> None:
    code, out, err = invoke(capsys, "simulate", BASIC, "--any-executor", "--inputs", value)
    assert (code, out) == (EXIT_ERROR, "")
    assert err.startswith(f"taskrunner: error: {message}")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]\n", "--inputs must be an object"),
        ("a: [\n", "is not valid YAML"),
        ("a: &x 1\nb: *x\n", "is not valid YAML: YAML aliases are not allowed"),
    ],
)
def test_bad_inputs_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, message: str
) -> None:
    given = tmp_path / "inputs.yaml"
    given.write_text(content)
    code, _, err = invoke(capsys, "simulate", BASIC, "--any-executor", "-i", str(given))
    assert code == EXIT_ERROR
    assert message in err
    assert len(err.splitlines()) == 1


def test_simulate_json_is_the_simulation_response(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = invoke(
        capsys, "simulate", BASIC, "--any-executor", "-i", '{"target": "t"}', "--output", "json"
    )
    body = json.loads(out)
    assert code == EXIT_OK
    assert set(body) == {
        "planHash",
        "failurePolicy",
        "steps",
        "outputs",
        "hasPendingApprovals",
        "approvals",
        "historyEstimate",
        "historyEvents",
        "warnings",
    }


def test_simulate_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = invoke(capsys, "simulate", str(EXAMPLES / "conditional.yaml"), "-o", "table")
    expected_hash = compile_manifest(example("conditional.yaml")).plan_hash
    assert code == EXIT_OK
    assert out == (
        f"planHash             {expected_hash}\n"
        "hasPendingApprovals  false\n"
        "historyEstimate      17 events in the largest history, 17 in all\n"
        "\n"
        "STEP          KIND         STATUS      REASON\n"
        "strategy      Conditional  WillBranch\n"
        "  canary      Run          Skipped     branch-not-taken\n"
        "  blue-green  Run          Skipped     branch-not-taken\n"
        "  direct      Run          Pending\n"
        "notify        Run          Skipped     condition-false\n"
        "check         Run          Pending\n"
    )


def test_simulate_table_says_which_way_each_policy_gate_goes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pack = str(EXAMPLES / "gate-policy.yaml")
    code, out, _ = invoke(capsys, "simulate", pack, "-i", '{"criticalFindings": 7}', "-o", "table")
    assert code == EXIT_OK
    lines = out.splitlines()
    assert [line.split() for line in lines[5:11]] == [
        ["scan", "Run", "Pending"],
        ["warn-only", "GatePolicy", "RequiresPolicy", "policy-fails"],
        ["findings", "GatePolicy", "RequiresPolicy", "policy-fails"],
        ["file-ticket", "Run", "Pending"],
        ["override", "GatePolicy", "RequiresApproval", "policy-fails"],
        ["publish", "Run", "Pending"],
    ]
    assert lines[11:] == [
        "policy: warn-only: policy small-change@1 fails with these inputs: the run logs a "
        "warning and goes on",
        "policy: findings: policy no-critical-findings@2 fails with these inputs: its else "
        "steps run",
        "policy: override: policy small-change@1 fails with these inputs: the run waits for "
        "approval security-override to override it",
    ]
    # Without inputs every gate passes.
    default = invoke(capsys, "simulate", pack, "-o", "table")[1]
    assert "policy: findings: policy no-critical-findings@2 passes with these inputs" in default


def test_simulate_table_shows_warnings(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pack = tmp_path / "pack.yaml"
    pack.write_text(
        dump(
            manifest(
                {
                    "steps": [
                        {
                            "id": "l",
                            # Inside a parallel block: no continue-as-new between its steps.
                            "parallel": {
                                "steps": [
                                    {
                                        "id": "inner",
                                        "loop": {
                                            "items": {"range": {"end": 10000}},
                                            "maxIterations": 10000,
                                            "steps": [{"id": "x", "run": {"uses": "builtin:noop"}}],
                                        },
                                    }
                                ]
                            },
                        }
                    ]
                }
            )
        )
    )
    out = invoke(capsys, "simulate", str(pack), "-o", "table")[1]
    assert out.splitlines()[-1].startswith(
        "warning: l: this step alone would put about 60005 events"
    )


def test_usage_errors_are_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["simulate"])
    assert info.value.code == EXIT_ERROR
    with pytest.raises(SystemExit) as info:
        main(["simulate", BASIC, "--any-executor", "--output", "yaml"])
    assert info.value.code == EXIT_ERROR
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == EXIT_ERROR
    capsys.readouterr()


def test_help_is_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "simulate" in capsys.readouterr().out


def test_unexpected_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import cli.pack_commands

    def explode(*_: object, **__: object) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(cli.pack_commands, "compile_manifest", explode)
    monkeypatch.delenv("TASKRUNNER_DEBUG", raising=False)
    code, _, err = invoke(capsys, "plan", BASIC, "--any-executor")
    assert code == EXIT_ERROR
    assert err == "taskrunner: error: RuntimeError: boom (set TASKRUNNER_DEBUG=1 for a traceback)\n"


def test_commands_register_themselves() -> None:
    parser = build_parser()
    subcommands = next(a for a in parser._actions if a.dest == "command")
    assert {"validate", "plan", "simulate"} <= set(subcommands.choices)  # type: ignore[arg-type]
