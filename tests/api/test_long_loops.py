"""GET /runs/{id} of a long loop that continued as new inside itself and paged its finished
iterations out to the artifact store: every step in order, page by page, with outputs when
asked, exactly as a run that kept them all would show."""

from __future__ import annotations

import httpx
from temporalio.testing import WorkflowEnvironment

from tests.api.conftest import Stack
from tests.api.support import DEFAULT_TENANT, READER, run_url
from tests.helpers import result_of, start_pack, unique

ITERATIONS = 130
PACK = f"""
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {{name: long-loop-api, version: 1.0.0}}
spec:
  steps:
    - id: each
      loop:
        items: {{range: {{end: {ITERATIONS}}}}}
        steps:
          - {{id: a, run: {{uses: "builtin:echo", with: {{i: "{{{{ item }}}}"}}}}}}
          - {{id: b, run: {{uses: "builtin:noop"}}}}
    - {{id: tail, run: {{uses: "builtin:noop"}}}}
"""


class TestGetRunOfALongLoop:
    async def test_paged_out_iterations_read_back_in_place(
        self, dev_env: WorkflowEnvironment, stack: Stack, http: httpx.AsyncClient
    ) -> None:
        run_id = unique("run")
        # Started on the API's worker with the test knob, so it continues as new (and pages its
        # iterations out) within a short run; the API reads it as any run.
        handle = await start_pack(
            dev_env.client,
            stack.settings.task_queue,
            PACK,
            run_id=run_id,
            tenant=DEFAULT_TENANT,
            continueAsNewAfterEvents=150,
        )
        result = await result_of(handle)
        assert result.status == "succeeded", result.error
        stored = list((stack.settings.data_dir / "runs" / DEFAULT_TENANT / run_id).glob("steps/*"))
        assert stored, "no iteration was paged out"

        expected = ["each"]
        for i in range(ITERATIONS):
            expected += [f"each[{i}]::a", f"each[{i}]::b"]
        expected.append("tail")
        seen: list[str] = []
        while len(seen) < len(expected):
            response = await http.get(
                run_url(run_id),
                params={"stepsOffset": len(seen), "stepsLimit": 70},
                headers=READER,
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["totalSteps"] == len(expected)
            assert body["steps"], body
            seen += [s["stepId"] for s in body["steps"]]
            assert all(s["status"] == "Succeeded" for s in body["steps"])
        assert seen == expected

        response = await http.get(
            run_url(run_id), params={"include": "outputs", "stepsLimit": 20}, headers=READER
        )
        steps = response.json()["steps"]
        assert [s["outputs"] for s in steps if s["stepId"].endswith("::a")] == [
            {"i": i} for i in range(len([s for s in steps if s["stepId"].endswith("::a")]))
        ]
