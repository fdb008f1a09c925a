"""`taskrunner validate`, `plan` and `simulate` apply the operator's sandbox ceilings from the
variables the API and the worker read, and refuse a pack asking for more with the field's path,
in the words of the API's 400."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.main import EXIT_ERROR, EXIT_INVALID, EXIT_OK, main
from compiler import Ceilings, ManifestError, compile_manifest
from tests.compiler.packs import dump, manifest
from workflows.contract.ceilings import CeilingSettings


def pack_file(tmp_path: Path, sandbox: dict[str, object]) -> str:
    data = manifest({"sandbox": sandbox, "steps": [{"id": "a", "run": {"uses": "builtin:noop"}}]})
    path = tmp_path / "pack.yaml"
    path.write_text(dump(data))
    return str(path)


def invoke(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", ["validate", "plan", "simulate"])
def test_a_pack_above_the_ceilings_is_refused_with_the_path(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    command: str,
) -> None:
    monkeypatch.setenv("TASKRUNNER_SANDBOX_MAX_MEMORY_MIB", "512")
    pack = pack_file(tmp_path, {"memoryLimitMiB": 1024})
    code, out, err = invoke(capsys, command, pack)
    assert (code, out) == (EXIT_INVALID, "")
    # The API's words: the same check, with the same ceilings, on the same variables.
    with pytest.raises(ManifestError) as api:
        compile_manifest(Path(pack).read_text(), ceilings=CeilingSettings().ceilings())
    [detail] = api.value.errors
    assert detail.path == "spec.sandbox.memoryLimitMiB"
    assert err == f"{pack}:{detail.line}:{detail.column}: {detail.path}: {detail.message}\n"
    assert "1024 MiB is more than this installation allows (512 MiB)" in err


def test_within_the_ceilings_is_valid(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TASKRUNNER_SANDBOX_MAX_MEMORY_MIB", "512")
    code, out, _ = invoke(capsys, "validate", pack_file(tmp_path, {"memoryLimitMiB": 512}))
    assert (code, out) == (EXIT_OK, "valid: test-pack 1.0.0, 1 steps\n")


def test_open_mode_follows_the_operators_switch(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TASKRUNNER_SANDBOX_ALLOW_OPEN", raising=False)
    pack = pack_file(tmp_path, {"mode": "open"})
    code, _, err = invoke(capsys, "validate", pack)
    assert code == EXIT_INVALID
    assert err.startswith(
        f"{pack}:12:5: spec.sandbox.mode: mode `open` is not allowed on this installation"
    )
    monkeypatch.setenv("TASKRUNNER_SANDBOX_ALLOW_OPEN", "true")
    assert invoke(capsys, "validate", pack)[0] == EXIT_OK


def test_step_timeouts_are_held_to_the_ceiling(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TASKRUNNER_SANDBOX_MAX_TIMEOUT_SECONDS", "60")
    data = manifest({"steps": [{"id": "a", "run": {"uses": "builtin:noop", "timeoutSeconds": 61}}]})
    path = tmp_path / "pack.yaml"
    path.write_text(dump(data))
    code, _, err = invoke(capsys, "plan", str(path))
    assert code == EXIT_INVALID
    assert err.startswith(
        f"{path}:11:7: spec.steps[0].run.timeoutSeconds: 61s is more than this installation"
    )


def test_a_bad_ceiling_variable_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TASKRUNNER_SANDBOX_MAX_MEMORY_MIB", "lots")
    code, out, err = invoke(capsys, "validate", pack_file(tmp_path, {}))
    assert (code, out) == (EXIT_ERROR, "")
    assert "TASKRUNNER_SANDBOX_MAX_MEMORY_MIB" in err


def test_the_api_and_the_worker_read_the_same_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    from api.settings import ApiSettings
    from workflows.settings import WorkerSettings

    for name, value in {
        "TASKRUNNER_SANDBOX_MAX_MEMORY_MIB": "300",
        "TASKRUNNER_SANDBOX_MAX_CPU_MILLICORES": "700",
        "TASKRUNNER_SANDBOX_MAX_QUOTA_SECONDS": "90",
        "TASKRUNNER_SANDBOX_MAX_TIMEOUT_SECONDS": "120",
        "TASKRUNNER_SANDBOX_ALLOW_OPEN": "true",
    }.items():
        monkeypatch.setenv(name, value)
    cli = CeilingSettings().ceilings()
    assert cli == Ceilings(300, 700, 90, 120, allow_open=True)
    assert ApiSettings().ceilings() == cli == WorkerSettings().ceilings()
