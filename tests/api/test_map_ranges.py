"""A run whose map counts its items (`items: {range: ...}`): created through POST /runs with a
body of a few hundred bytes, however many items the map has, and refused with the path of a bad
range before anything runs."""

from __future__ import annotations

import httpx

from compiler.compile import MAP_MAX_ITEMS
from compiler.history import MAP_INLINE_LIMIT
from tests.api.support import READER, RUNS, bearer, create_run, run_url, status_is, wait_for_run

SIMULATIONS = "/v1/task-runner/simulations"
COUNT = MAP_INLINE_LIMIT + 50  # past the inline limit: the map fans out to a chunk workflow


def counted(end: int, start: int = 0, step: int = 1) -> str:
    return f"""
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {{name: api-map-range, version: 1.0.0}}
spec:
  steps:
    - id: each
      map:
        items: {{range: {{start: {start}, end: {end}, step: {step}}}}}
        maxParallel: 50
        step: {{id: one, run: {{uses: "builtin:echo", with: {{n: "{{{{ item }}}}"}}}}}}
    - id: total
      run: {{uses: "builtin:echo", with: {{sum: "{{{{ sum(steps.each.outputs.results[].n) }}}}"}}}}
"""


async def test_a_run_of_a_range_map_runs_every_item(http: httpx.AsyncClient) -> None:
    created = await create_run(http, counted(2 * COUNT, start=0, step=2))
    run_id = created["runId"]
    done = await wait_for_run(http, run_id, status_is("succeeded", "failed"), timeout=120)
    assert done["status"] == "succeeded", done
    assert done["totalSteps"] == 2 + COUNT
    shown = await http.get(
        run_url(run_id),
        params={"include": "outputs", "stepsOffset": COUNT + 1, "stepsLimit": 1},
        headers=READER,
    )
    [total] = shown.json()["steps"]
    assert total["stepId"] == "total"
    assert total["outputs"] == {"sum": sum(range(0, 2 * COUNT, 2))}
    last = await http.get(
        run_url(run_id), params={"stepsOffset": COUNT, "stepsLimit": 1}, headers=READER
    )
    [step] = last.json()["steps"]
    assert (step["stepId"], step["status"]) == (f"each[{COUNT - 1}]::one", "Succeeded")


async def test_a_bad_range_is_refused_with_its_path(http: httpx.AsyncClient) -> None:
    for manifest, path, message in [
        (counted(10, step=0), "spec.steps[0].map.items.range.step", "must not be 0"),
        (counted(0, start=5), "spec.steps[0].map.items.range", "has no items"),
        (counted(MAP_MAX_ITEMS + 1), "spec.steps[0].map.items.range", "more than a map may"),
    ]:
        response = await http.post(
            RUNS, json={"manifest": manifest}, headers=bearer("taskrunner.operator")
        )
        assert response.status_code == 400, response.text
        errors = {e["path"]: e["message"] for e in response.json()["errors"]}
        assert message in errors.get(path, ""), errors


async def test_a_million_item_range_map_is_a_small_request(http: httpx.AsyncClient) -> None:
    # The same map as a run input would be a 6.9 MB body, refused with 413; counted, the whole
    # request is the manifest. Simulated rather than run: the run is the benchmark's.
    body = {"manifest": counted(MAP_MAX_ITEMS)}
    assert len(httpx.Request("POST", "http://x", json=body).content) < 1_000
    response = await http.post(SIMULATIONS, json=body, headers=READER)
    assert response.status_code == 200, response.text
    simulated = response.json()
    assert simulated["historyEvents"] > 3 * MAP_MAX_ITEMS  # every item counted
    [each, total] = simulated["steps"]
    assert total["id"] == "total"
    assert each["kind"] == "Map" and [c["id"] for c in each["children"]] == ["one"]
