"""The operator's sandbox ceilings at the API: a pack asking for more than the installation
allows is a 400 PlanErrorResponse naming the field, for simulations and runs alike, and no run
is started."""

from __future__ import annotations

import httpx
import pytest

from tests.api.packs import ECHO
from tests.api.support import APPROVER, READER

SIMULATIONS = "/v1/task-runner/simulations"
RUNS = "/v1/task-runner/runs"


def with_sandbox(sandbox: str) -> str:
    return ECHO.replace("spec:\n", f"spec:\n  sandbox: {sandbox}\n", 1)


@pytest.mark.parametrize(
    ("sandbox", "path"),
    [
        ("{memoryLimitMiB: 999999}", "spec.sandbox.memoryLimitMiB"),
        ("{cpuLimitMillicores: 64000}", "spec.sandbox.cpuLimitMillicores"),
        ("{quotaSeconds: 86400}", "spec.sandbox.quotaSeconds"),
        ("{mode: open}", "spec.sandbox.mode"),
        ("{mode: leaky}", "spec.sandbox.mode"),
        ("{memoryLimitMiB: -5}", "spec.sandbox.memoryLimitMiB"),
    ],
)
async def test_simulation_above_the_ceilings_is_400_with_the_path(
    http: httpx.AsyncClient, sandbox: str, path: str
) -> None:
    body = {"manifest": with_sandbox(sandbox), "inputs": {"who": "x"}}
    response = await http.post(SIMULATIONS, json=body, headers=READER)
    assert response.status_code == 400, response.text
    assert [e["path"] for e in response.json()["errors"]] == [path]


async def test_run_above_the_ceilings_is_400_and_nothing_starts(http: httpx.AsyncClient) -> None:
    body = {
        "manifest": with_sandbox("{memoryLimitMiB: 999999}"),
        "inputs": {"who": "x"},
        "runId": "run-over-ceiling",
    }
    response = await http.post(RUNS, json=body, headers=APPROVER)
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["path"] == "spec.sandbox.memoryLimitMiB"
    assert "more than this installation allows" in response.json()["errors"][0]["message"]
    assert (await http.get(f"{RUNS}/run-over-ceiling", headers=READER)).status_code == 404


async def test_within_the_ceilings_is_accepted(http: httpx.AsyncClient) -> None:
    body = {
        "manifest": with_sandbox("{memoryLimitMiB: 256, quotaSeconds: 60}"),
        "inputs": {"who": "x"},
    }
    response = await http.post(SIMULATIONS, json=body, headers=READER)
    assert response.status_code == 200, response.text
