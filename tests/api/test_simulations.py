"""POST /v1/task-runner/simulations: what a run would do, as the contract's SimulationResponse."""

from __future__ import annotations

import httpx

from tests.api.packs import ECHO, GATED, contract_example
from tests.api.support import READER, bearer, error_code
from tests.compiler.packs import ONE_PASS
from tests.helpers import EXAMPLES

SIMULATIONS = "/v1/task-runner/simulations"


class TestSimulate:
    async def test_contract_example_needs_its_executor(self, http: httpx.AsyncClient) -> None:
        body = contract_example(SIMULATIONS, "basic-simulation")
        response = await http.post(SIMULATIONS, json=body, headers=READER)
        assert response.status_code == 400, response.text
        [error] = response.json()["errors"]
        assert error["path"] == "spec.steps[0].run.uses"
        assert "unknown executor 'builtin:scanner'" in error["message"]
        assert "docs/executors.md" in error["message"]

    async def test_misspelt_executor_and_wrong_with_are_400(self, http: httpx.AsyncClient) -> None:
        pack = ECHO.replace('uses: "builtin:noop"', 'uses: "builtin:sleep", with: {second: 1}')
        pack = pack.replace('"builtin:echo"', '"builtin:ecoh"')
        response = await http.post(
            SIMULATIONS, json={"manifest": pack, "inputs": {"who": "x"}}, headers=READER
        )
        assert response.status_code == 400, response.text
        errors = {e["path"]: e["message"] for e in response.json()["errors"]}
        assert "did you mean 'builtin:echo'?" in errors["spec.steps[0].run.uses"]
        assert "did you mean 'seconds'?" in errors["spec.steps[1].run.with"]

    async def test_contract_example_simulates_where_installed(
        self, contract_http: httpx.AsyncClient
    ) -> None:
        body = contract_example(SIMULATIONS, "basic-simulation")
        response = await contract_http.post(SIMULATIONS, json=body, headers=READER)
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["planHash"].startswith("sha256:") and len(result["planHash"]) == 71
        assert result["failurePolicy"] == {
            "maxAttempts": 1,
            "backoffSeconds": 0,
            "continueOnError": False,
        }
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

    async def test_gate_requires_approval(self, http: httpx.AsyncClient) -> None:
        response = await http.post(SIMULATIONS, json={"manifest": GATED}, headers=READER)
        assert response.status_code == 200, response.text
        result = response.json()
        gate = next(s for s in result["steps"] if s["kind"] == "GateApproval")
        assert gate["status"] == "RequiresApproval"
        assert gate["approvalId"] == "release-manager"
        assert result["hasPendingApprovals"] is True

    async def test_policy_gates_are_decided_from_the_inputs(self, http: httpx.AsyncClient) -> None:
        pack = (EXAMPLES / "gate-policy.yaml").read_text()
        decided = {}
        for n in (0, 7):
            response = await http.post(
                SIMULATIONS,
                json={"manifest": pack, "inputs": {"criticalFindings": n}},
                headers=READER,
            )
            assert response.status_code == 200, response.text
            decided[n] = response.json()
        passing = {s["id"]: s for s in decided[0]["steps"]}
        assert passing["findings"]["statusReason"] == "policy-passes"
        assert passing["findings"]["children"][0]["status"] == "Skipped"
        assert passing["override"]["status"] == "RequiresPolicy"
        assert decided[0]["hasPendingApprovals"] is False
        failing = {s["id"]: s for s in decided[7]["steps"]}
        assert failing["findings"]["statusReason"] == "policy-fails"
        assert failing["findings"]["gateMessage"] == (
            "policy no-critical-findings@2 fails with these inputs: its else steps run"
        )
        assert failing["findings"]["children"][0]["status"] == "Pending"
        assert failing["override"]["status"] == "RequiresApproval"
        assert failing["override"]["approvalId"] == "security-override"
        assert decided[7]["hasPendingApprovals"] is True

    async def test_a_policy_on_runtime_outputs_says_why_it_is_undecided(
        self, http: httpx.AsyncClient
    ) -> None:
        # The scan's outputs are a sleep's, which only the run knows.
        scan = (
            'uses: builtin:echo\n        with:\n          critical: "{{ inputs.criticalFindings }}"'
        )
        text = (EXAMPLES / "gate-policy.yaml").read_text()
        assert scan in text
        pack = text.replace(scan, "uses: builtin:sleep\n        with: {seconds: 0}")
        response = await http.post(SIMULATIONS, json={"manifest": pack}, headers=READER)
        assert response.status_code == 200, response.text
        gate = next(s for s in response.json()["steps"] if s["id"] == "findings")
        assert gate["statusReason"] == "policy-unknown"
        assert gate["gateMessage"] == (
            "policy no-critical-findings@2 is decided when the run reaches this gate: its "
            "condition reads steps.scan, known only at run time"
        )

    async def test_same_manifest_same_hash(self, http: httpx.AsyncClient) -> None:
        body = {"manifest": ECHO, "inputs": {"who": "ada"}}
        first = await http.post(SIMULATIONS, json=body, headers=READER)
        second = await http.post(SIMULATIONS, json=body, headers=READER)
        other = await http.post(
            SIMULATIONS, json={**body, "inputs": {"who": "bob"}}, headers=READER
        )
        assert first.json()["planHash"] == second.json()["planHash"] != other.json()["planHash"]

    async def test_invalid_manifest_is_400_with_paths(self, http: httpx.AsyncClient) -> None:
        bad = ECHO.replace('uses: "builtin:noop"', 'uses: "builtin:noop", bogus: 1')
        response = await http.post(
            SIMULATIONS, json={"manifest": bad, "inputs": {"who": "x"}}, headers=READER
        )
        assert response.status_code == 400
        body = response.json()
        assert set(body) == {"errors"}
        assert [e["path"] for e in body["errors"]] == ["spec.steps[1].run.bogus"]
        assert body["errors"][0]["message"]

    async def test_every_manifest_error_is_400_at_once_with_line_and_column(
        self, http: httpx.AsyncClient
    ) -> None:
        # A misspelt key, a duplicate step id, a misspelt step and a misspelt approval: one
        # answer names them all, each where it is in the YAML.
        response = await http.post(SIMULATIONS, json={"manifest": ONE_PASS}, headers=READER)
        assert response.status_code == 400, response.text
        assert response.json() == {
            "errors": [
                {
                    "path": "spec.steps[0].run.timoutSeconds",
                    "message": "unknown key (did you mean 'timeoutSeconds'?)",
                    "line": 13,
                    "column": 9,
                },
                {
                    "path": "spec.steps[1].id",
                    "message": "duplicate step id 'build' (first at spec.steps[0].id)",
                    "line": 14,
                    "column": 7,
                },
                {
                    "path": "spec.steps[2].when",
                    "message": "unknown step 'biuld' (did you mean 'build'?) (known: build, ship)",
                    "line": 17,
                    "column": 7,
                },
                {
                    "path": "spec.steps[2].gate.approval.id",
                    "message": "unknown approval 'relase' (did you mean 'release'?) (known: "
                    "release)",
                    "line": 20,
                    "column": 11,
                },
            ]
        }

    async def test_missing_required_input_is_400(self, http: httpx.AsyncClient) -> None:
        response = await http.post(SIMULATIONS, json={"manifest": ECHO}, headers=READER)
        assert response.status_code == 400
        # Not in the manifest's text: no line or column.
        assert response.json()["errors"] == [
            {"path": "inputs.who", "message": "required input is missing"}
        ]

    async def test_not_yaml_is_400(self, http: httpx.AsyncClient) -> None:
        response = await http.post(SIMULATIONS, json={"manifest": "[unclosed"}, headers=READER)
        assert response.status_code == 400
        assert response.json()["errors"]

    async def test_missing_manifest_is_400_envelope(self, http: httpx.AsyncClient) -> None:
        response = await http.post(SIMULATIONS, json={"inputs": {}}, headers=READER)
        assert response.status_code == 400
        assert error_code(response) == "invalid_request"
        assert "manifest" in response.json()["error"]["message"]

    async def test_needs_a_token(self, http: httpx.AsyncClient) -> None:
        response = await http.post(SIMULATIONS, json={"manifest": ECHO})
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")

    async def test_a_token_without_taskrunner_scopes_is_403(self, http: httpx.AsyncClient) -> None:
        response = await http.post(SIMULATIONS, json={"manifest": ECHO}, headers=bearer("openid"))
        assert response.status_code == 403
        assert error_code(response) == "insufficient_scope"
        assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
