"""A step that breaks a limit of its sandbox: GET /runs/{id} names the limit, as the step's
status reason and in the run's error, not just `step-failed` (issue #11's bad-input rule)."""

from __future__ import annotations

import httpx
import pytest

from activities.sandbox.host import host_sandbox
from tests.api.support import READER, create_run, run_url, status_is, wait_for_run

pytestmark = pytest.mark.skipif(
    host_sandbox().unavailable is not None,
    reason=f"this host cannot sandbox: {host_sandbox().unavailable}",
)

# Four processes of 40 MiB each, every page touched, under a 64 MiB limit.
MEMORY_HOG = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: api-memory-hog, version: 1.0.0}
spec:
  sandbox: {memoryLimitMiB: 64}
  steps:
    - id: hog
      run:
        uses: "builtin:shell"
        with:
          command: >-
            for i in 1 2 3 4; do python3 -c "x = b'x' * 41943040; import time; time.sleep(3)" &
            done; wait
    - {id: after, run: {uses: "builtin:noop"}}
"""

SLOW_SHELL = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: api-slow-shell, version: 1.0.0}
spec:
  steps:
    - {id: nap, run: {uses: "builtin:shell", with: {command: "sleep 30.771"}, timeoutSeconds: 1}}
"""


async def test_a_step_over_its_memory_limit_fails_the_run_for_memory_limit(
    http: httpx.AsyncClient,
) -> None:
    run = await create_run(http, MEMORY_HOG)
    state = await wait_for_run(http, run["runId"], status_is("failed", "succeeded"), timeout=60)
    assert state["status"] == "failed"
    steps = {s["stepId"]: s for s in state["steps"]}
    assert steps["hog"]["status"] == "Failed"
    assert steps["hog"]["statusReason"] == "memory-limit"
    assert state["error"] == "step hog failed (memory-limit)"
    assert steps["after"]["status"] == "Skipped"
    shown = await http.get(run_url(run["runId"]), params={"include": "outputs"}, headers=READER)
    hog = next(s for s in shown.json()["steps"] if s["stepId"] == "hog")
    assert hog["outputs"]["limit"] == "memory-limit"


async def test_a_step_over_its_timeout_fails_for_timeout(http: httpx.AsyncClient) -> None:
    run = await create_run(http, SLOW_SHELL)
    state = await wait_for_run(http, run["runId"], status_is("failed", "succeeded"), timeout=30)
    [nap] = state["steps"]
    assert (state["status"], nap["statusReason"]) == ("failed", "timeout")
    assert state["error"] == "step nap failed (timeout)"
