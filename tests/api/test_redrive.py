"""POST /runs/{runId}/redrive against the real stack: succeeded steps are reused with their
outputs, a gate passed before stays passed only for an unchanged planHash, and bad redrives
are refused clearly. Also `taskrunner runs redrive --dry-run`."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from cli.main import main
from tests.api.conftest import Stack
from tests.api.packs import ECHO
from tests.api.support import (
    APPROVER,
    READER,
    RUNS,
    bearer,
    create_run,
    error_code,
    run_url,
    status_is,
    token,
    wait_for_run,
)
from tests.helpers import unique

PACKS = "/v1/task-runner/packs"
ADMIN = bearer("taskrunner.admin")


def gated(name: str) -> str:
    return f"""
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {{name: {name}, version: 1.0.0}}
spec:
  inputs:
    - {{name: mode, type: string, default: fail}}
  approvals:
    - {{id: ship, grants: [packs.approve], requiredApprovals: 1}}
  steps:
    - {{id: build, run: {{uses: "builtin:echo", with: {{artifact: "app-{{{{ inputs.mode }}}}"}}}}}}
    - {{id: approve, gate: {{approval: {{id: ship}}}}}}
    - id: check
      when: "{{{{ inputs.mode == 'fail' }}}}"
      run: {{uses: "builtin:fail", with: {{message: boom}}}}
    - {{id: deploy, run: {{uses: "builtin:echo", with: {{shipped: "{{{{ steps.build.outputs.artifact }}}}"}}}}}}
"""


async def listed(http: httpx.AsyncClient, pack: str, run_id: str) -> dict[str, Any]:
    """The run's summary in the listing (visibility trails a run by a moment)."""
    for _ in range(100):
        response = await http.get(RUNS, params={"pack": pack}, headers=READER)
        found = [r for r in response.json()["runs"] if r["runId"] == run_id]
        if found:
            return found[0]
        await asyncio.sleep(0.2)
    raise AssertionError(f"run {run_id} never showed in the listing")


def steps(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["stepId"]: s for s in state["steps"]}


async def approve(http: httpx.AsyncClient, run_id: str, plan_hash: str) -> None:
    response = await http.post(
        f"{run_url(run_id)}/approvals/ship",
        json={"decision": "approved", "planHash": plan_hash},
        headers=bearer("taskrunner.operator", sub="user:bob", grants=["packs.approve"]),
    )
    assert response.status_code == 200, response.text


async def failed_run(http: httpx.AsyncClient) -> dict[str, Any]:
    """A run of a registered pack that passed its gate, then failed at `check`."""
    name = unique("rd")
    assert (
        await http.post(PACKS, json={"manifest": gated(name)}, headers=ADMIN)
    ).status_code == 201
    created = await http.post(RUNS, json={"pack": {"name": name}}, headers=APPROVER)
    assert created.status_code == 201, created.text
    run_id = created.json()["runId"]
    state = await wait_for_run(http, run_id, status_is("awaiting-approval"))
    await approve(http, run_id, state["planHash"])
    return await wait_for_run(http, run_id, status_is("failed"))


class TestRedrive:
    async def test_input_change_reuses_outputs_and_asks_the_gate_again(
        self, http: httpx.AsyncClient
    ) -> None:
        old = await failed_run(http)
        assert steps(old)["check"]["status"] == "Failed"

        preview = await http.post(
            f"{run_url(old['runId'])}/redrive",
            params={"dryRun": "true"},
            json={"inputs": {"mode": "ok"}},
            headers=APPROVER,
        )
        assert preview.status_code == 200, preview.text
        plan = preview.json()
        assert (plan["restartFrom"], plan["planHashChanged"]) == ("check", True)
        assert plan["reusedSteps"] == ["build"]
        assert plan["gatesLapsed"] == ["approve"] and plan["approvalsCarried"] == []

        created = await http.post(
            f"{run_url(old['runId'])}/redrive", json={"inputs": {"mode": "ok"}}, headers=APPROVER
        )
        assert created.status_code == 201, created.text
        new = created.json()
        assert new["redriveOf"] == old["runId"]
        assert new["planHash"] != old["planHash"]
        # The gate is decided again: the plan changed, nobody approved this one.
        waiting = await wait_for_run(http, new["runId"], status_is("awaiting-approval"))
        build = steps(waiting)["build"]
        assert (build["status"], build["statusReason"]) == ("Succeeded", "reused")
        await approve(http, new["runId"], new["planHash"])
        done = await wait_for_run(http, new["runId"], status_is("succeeded"))
        assert steps(done)["check"]["status"] == "Skipped"
        # deploy used the reused step's outputs: the artifact built by the first run.
        response = await http.get(f"{run_url(new['runId'])}/logs", headers=READER)
        assert "step.completed" in response.text
        old_now = (await http.get(run_url(old["runId"]), headers=READER)).json()
        assert old_now["redrives"] == [new["runId"]]
        summary = await listed(http, done["pack"], new["runId"])
        assert (summary["redriveOf"], summary["packVersion"]) == (old["runId"], "1.0.0")

    async def test_same_plan_keeps_the_gate_passed(
        self, http: httpx.AsyncClient, stack: Stack, capsys: pytest.CaptureFixture[str]
    ) -> None:
        old = await failed_run(http)
        argv = [
            "runs",
            "redrive",
            old["runId"],
            "--dry-run",
            "--url",
            stack.url,
            "--token",
            token("taskrunner.operator"),
        ]
        assert await asyncio.to_thread(main, argv) == 0
        out = capsys.readouterr().out
        assert "reused    build, approve" in out
        assert "approvals carried    ship" in out

        created = await http.post(f"{run_url(old['runId'])}/redrive", json={}, headers=APPROVER)
        assert created.status_code == 201, created.text
        # Same inputs, same plan: the approval carries over, and `check` fails again at once.
        done = await wait_for_run(http, created.json()["runId"], status_is("failed"))
        by_id = steps(done)
        assert by_id["approve"]["statusReason"] == "reused"
        assert by_id["build"]["statusReason"] == "reused"
        [approval] = done["approvals"]
        assert approval["status"] == "approved"

    async def test_a_retried_redrive_starts_one_run(self, http: httpx.AsyncClient) -> None:
        old = await failed_run(http)
        keyed = {**APPROVER, "Idempotency-Key": unique("key")}
        first = await http.post(f"{run_url(old['runId'])}/redrive", json={}, headers=keyed)
        again = await http.post(f"{run_url(old['runId'])}/redrive", json={}, headers=keyed)
        assert (first.status_code, again.status_code) == (201, 201)
        assert again.headers["Idempotent-Replay"] == "true"
        assert again.json()["runId"] == first.json()["runId"]
        state = (await http.get(run_url(old["runId"]), headers=READER)).json()
        assert state["redrives"] == [first.json()["runId"]]

    async def test_bad_redrives(self, http: httpx.AsyncClient) -> None:
        done = await create_run(http, ECHO, inputs={"who": "x"})
        await wait_for_run(http, done["runId"], status_is("succeeded"))
        refused = await http.post(f"{run_url(done['runId'])}/redrive", json={}, headers=APPROVER)
        assert (refused.status_code, error_code(refused)) == (409, "run_not_redrivable")

        old = await failed_run(http)
        unknown = await http.post(
            f"{run_url(old['runId'])}/redrive", json={"fromStep": "nope"}, headers=APPROVER
        )
        assert unknown.status_code == 400
        assert unknown.json()["errors"][0]["path"] == "fromStep"
        reader = await http.post(f"{run_url(old['runId'])}/redrive", json={}, headers=READER)
        assert reader.status_code == 403
        missing = await http.post(f"{run_url('no-such-run')}/redrive", json={}, headers=APPROVER)
        assert missing.status_code == 404
