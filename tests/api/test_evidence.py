"""GET /runs/{runId}/evidence, the served public key, and `taskrunner evidence get|verify` and
`taskrunner keys` against them: a bundle verifies, and a changed log line, a changed artifact,
a changed statement or another key each make `verify` fail, naming what does not match."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.main import main
from tests.api.conftest import Stack
from tests.api.packs import FILES, GATED
from tests.api.support import (
    APPROVER,
    READER,
    create_run,
    error_code,
    run_url,
    status_is,
    token,
    wait_for_run,
)
from workflows.contract.log_chain import GENESIS, chain_head
from workflows.contract.service_key import generate_private_pem, parse_private_pem

VIEWER_TOKEN = token("taskrunner.viewer")


async def cli(stack: Stack, *argv: str) -> int:
    # In a thread: the worker answering the API's queries runs on this test's event loop.
    return await asyncio.to_thread(
        main, [*argv[:2], "--url", stack.url, "--token", VIEWER_TOKEN, *argv[2:]]
    )


async def saved_bundle(stack: Stack, run_id: str, folder: Path) -> tuple[Path, Path]:
    bundle = folder / "bundle.json"
    files = folder / "files"
    assert (
        await cli(stack, "evidence", "get", run_id, "-o", str(bundle), "--artifacts", str(files))
        == 0
    )
    return bundle, files


@pytest.fixture
def key_file(stack: Stack, tmp_path: Path) -> Path:
    assert stack.settings.service_key is not None
    path = tmp_path / "service.pub"
    path.write_text(parse_private_pem(stack.settings.service_key.encode(), "t").public_pem)
    return path


def statement_of(bundle: dict[str, Any]) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    return decoded


class TestServiceKey:
    async def test_served_without_a_token_and_printed_by_keys(
        self,
        http: httpx.AsyncClient,
        stack: Stack,
        key_file: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        response = await http.get("/.well-known/taskrunner/keys")
        assert response.status_code == 200
        [key] = response.json()["keys"]
        assert key["keytype"] == "ed25519"
        assert key["publicKeyPem"] == key_file.read_text()
        assert await asyncio.to_thread(main, ["keys", "--url", stack.url]) == 0
        assert key_file.read_text() in capsys.readouterr().out

    def test_generate_writes_a_private_key_once(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        target = tmp_path / "k.pem"
        assert main(["keys", "generate", str(target)]) == 0
        assert (target.stat().st_mode & 0o777) == 0o600
        public = parse_private_pem(target.read_bytes(), "k").public_pem
        assert public in capsys.readouterr().out
        assert main(["keys", "generate", str(target)]) == 1
        assert "exists" in capsys.readouterr().err


class TestRunEvidence:
    async def test_a_finished_run_verifies_and_tampering_fails(
        self,
        http: httpx.AsyncClient,
        stack: Stack,
        key_file: Path,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        run_id = (await create_run(http, FILES))["runId"]
        state = await wait_for_run(http, run_id, status_is("succeeded"))
        bundle_path, files = await saved_bundle(stack, run_id, tmp_path)
        bundle = json.loads(bundle_path.read_text())

        statement = statement_of(bundle)
        assert statement["_type"] == "https://in-toto.io/Statement/v1"
        subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
        # The captured file, the shell step's stdout and stderr, and the log.
        assert set(subjects) == {"report", "write.stdout", "write.stderr", "taskrunner:run-log"}
        predicate = statement["predicate"]
        assert predicate["run"]["finished"] is True
        assert predicate["run"]["requestedBy"] == "user:rita"  # create_run's requester
        assert predicate["pack"]["name"] == "api-files"
        assert predicate["planHash"] == state["planHash"]
        assert {s["stepId"]: s["status"] for s in predicate["steps"]} == {
            "write": "Succeeded",
            "facts": "Succeeded",
        }
        # The head the run's state shows is the one signed, and the served log chains to it.
        assert predicate["log"]["chainHead"] == state["logChainHead"] != GENESIS
        response = await http.get(f"{run_url(run_id)}/logs", headers=READER)
        served = [json.loads(line) for line in response.text.splitlines()]
        assert chain_head(served) == state["logChainHead"]

        verify = ["evidence", "verify", str(bundle_path), "--key", str(key_file)]
        assert await cli(stack, *verify, "--artifacts", str(files)) == 0
        assert "3 artifact(s) match" in capsys.readouterr().out

        # A log line changed after the fact.
        forged = json.loads(bundle_path.read_text())
        forged["log"][1]["message"] = "nothing to see here"
        bundle_path.with_name("forged-log.json").write_text(json.dumps(forged))
        assert (
            await cli(
                stack,
                "evidence",
                "verify",
                str(bundle_path.with_name("forged-log.json")),
                "--key",
                str(key_file),
            )
            == 1
        )
        assert "log entry 2 (sequence 2)" in capsys.readouterr().err

        # A line dropped, with every later hash recomputed: the signed head still catches it.
        dropped = json.loads(bundle_path.read_text())
        del dropped["log"][-1]
        bundle_path.with_name("dropped.json").write_text(json.dumps(dropped))
        assert (
            await cli(
                stack,
                "evidence",
                "verify",
                str(bundle_path.with_name("dropped.json")),
                "--key",
                str(key_file),
            )
            == 1
        )
        assert "is not the signed head" in capsys.readouterr().err

        # An artifact changed after the fact.
        (files / "report").write_text("report body, edited")
        assert await cli(stack, *verify, "--artifacts", str(files)) == 1
        assert "artifact report: sha256" in capsys.readouterr().err

        # The statement changed (a step made to look as though it passed): the signature breaks.
        changed = json.loads(bundle_path.read_text())
        payload = statement_of(changed)
        payload["predicate"]["run"]["requestedBy"] = "user:mallory"
        changed["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
        bundle_path.with_name("changed.json").write_text(json.dumps(changed))
        assert (
            await cli(
                stack,
                "evidence",
                "verify",
                str(bundle_path.with_name("changed.json")),
                "--key",
                str(key_file),
            )
            == 1
        )
        assert "signature" in capsys.readouterr().err

        # Another key.
        other = tmp_path / "other.pub"
        other.write_text(parse_private_pem(generate_private_pem(), "o").public_pem)
        assert await cli(stack, "evidence", "verify", str(bundle_path), "--key", str(other)) == 1
        assert "not signed by the trusted key" in capsys.readouterr().err

        # Without --key, the key the API serves is the trusted one.
        assert await cli(stack, "evidence", "verify", str(bundle_path)) == 0

    async def test_an_unfinished_run_says_so_and_verifies(
        self,
        http: httpx.AsyncClient,
        stack: Stack,
        key_file: Path,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        run_id = (await create_run(http, GATED))["runId"]
        await wait_for_run(http, run_id, status_is("awaiting-approval"))
        bundle_path, _ = await saved_bundle(stack, run_id, tmp_path)
        predicate = statement_of(json.loads(bundle_path.read_text()))["predicate"]
        assert predicate["run"]["finished"] is False
        assert predicate["run"]["status"] == "awaiting-approval"
        [approval] = predicate["approvals"]
        assert (approval["approvalId"], approval["decisions"]) == ("release-manager", [])
        assert await cli(stack, "evidence", "verify", str(bundle_path), "--key", str(key_file)) == 0
        assert "had not ended" in capsys.readouterr().out
        await http.post(
            f"{run_url(run_id)}/cancel",
            json={},
            headers=READER | {"Authorization": f"Bearer {token('taskrunner.operator')}"},
        )

    async def test_needs_a_token_and_an_existing_run(self, http: httpx.AsyncClient) -> None:
        assert (await http.get(f"{run_url('no-such-run')}/evidence")).status_code == 401
        response = await http.get(f"{run_url('no-such-run')}/evidence", headers=READER)
        assert response.status_code == 404
        assert error_code(response) == "run_not_found"


class TestDecisionsInEvidence:
    async def test_who_decided_how_and_when(
        self, http: httpx.AsyncClient, stack: Stack, key_file: Path, tmp_path: Path
    ) -> None:
        run_id = (await create_run(http, GATED))["runId"]
        state = await wait_for_run(http, run_id, status_is("awaiting-approval"))
        decided = await http.post(
            f"{run_url(run_id)}/approvals/release-manager",
            json={"decision": "approved", "planHash": state["planHash"], "summary": "ship it"},
            headers=APPROVER,
        )
        assert decided.status_code == 200, decided.text
        await wait_for_run(http, run_id, status_is("succeeded"))
        bundle_path, _ = await saved_bundle(stack, run_id, tmp_path)
        predicate = statement_of(json.loads(bundle_path.read_text()))["predicate"]
        [approval] = predicate["approvals"]
        assert approval["status"] == "approved"
        [decision] = approval["decisions"]
        assert (decision["actorId"], decision["decision"], decision["via"]) == (
            "user:alice",
            "approved",
            "rest",
        )
        assert decision["summary"] == "ship it" and decision["decidedAt"].endswith("Z")
        assert await cli(stack, "evidence", "verify", str(bundle_path), "--key", str(key_file)) == 0
