"""GET /runs/{runId}/logs: NDJSON, one RunLogEntry per line; `after` resumes, `follow` streams."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from tests.api.packs import ECHO, GATED
from tests.api.support import (
    APPROVER,
    READER,
    create_run,
    error_code,
    run_url,
    status_is,
    wait_for_run,
)


def parse(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


async def finished_log_requests(http: httpx.AsyncClient) -> float:
    """How many log requests the server has finished with 200, from its latency histogram."""
    wanted = (
        'taskrunner_http_request_duration_seconds_count{method="GET",'
        'route="/v1/task-runner/runs/{runId}/logs",status="200"}'
    )
    for line in (await http.get("/metrics")).text.splitlines():
        if line.startswith(wanted):
            return float(line.split()[-1])
    return 0.0


class TestStreamRunLogs:
    async def test_ndjson_entries_of_a_finished_run(self, http: httpx.AsyncClient) -> None:
        created = await create_run(http, ECHO, inputs={"who": "ada"})
        await wait_for_run(http, created["runId"], status_is("succeeded"))
        response = await http.get(f"{run_url(created['runId'])}/logs", headers=READER)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        assert response.text.endswith("\n")
        entries = parse(response.text)
        assert [e["sequence"] for e in entries] == list(range(1, len(entries) + 1))
        for entry in entries:
            assert {"timestamp", "level", "eventType", "message"} <= set(entry)
            assert entry["level"] in {"debug", "info", "warn", "error"}
        events = [e["eventType"] for e in entries]
        assert events[0] == "run.created" and events[-1] == "run.completed"
        assert {"eventType": "step.started", "stepId": "hello"}.items() <= entries[2].items()

    async def test_after_resumes(self, http: httpx.AsyncClient) -> None:
        created = await create_run(http, ECHO, inputs={"who": "ada"})
        await wait_for_run(http, created["runId"], status_is("succeeded"))
        url = f"{run_url(created['runId'])}/logs"
        everything = parse((await http.get(url, headers=READER)).text)
        rest = parse((await http.get(url, params={"after": 3}, headers=READER)).text)
        assert rest == everything[3:]
        assert (await http.get(url, params={"after": len(everything)}, headers=READER)).text == ""

    async def test_follow_streams_until_the_run_ends(self, http: httpx.AsyncClient) -> None:
        created = await create_run(http, GATED)
        run_id = created["runId"]
        seen: list[dict[str, Any]] = []

        async def follow() -> None:
            async with http.stream(
                "GET", f"{run_url(run_id)}/logs", params={"follow": "true"}, headers=READER
            ) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if line:
                        seen.append(json.loads(line))

        reader = asyncio.create_task(follow())
        state = await wait_for_run(http, run_id, status_is("awaiting-approval"))
        # The stream is open, and already has the entries up to the gate.
        while not any(e["eventType"] == "gate.awaiting" for e in seen):
            await asyncio.sleep(0.05)
        assert not reader.done()
        decision = {"decision": "approved", "planHash": state["planHash"]}
        response = await http.post(
            f"{run_url(run_id)}/approvals/release-manager", json=decision, headers=APPROVER
        )
        assert response.status_code == 200, response.text
        await asyncio.wait_for(reader, timeout=20)  # ends by itself once the run has ended
        events = [e["eventType"] for e in seen]
        assert (
            events.index("gate.awaiting")
            < events.index("gate.approved")
            < events.index("run.completed")
        )
        assert events[-1] == "run.completed"
        assert [e["sequence"] for e in seen] == list(range(1, len(seen) + 1))

    async def test_follow_ends_when_the_client_leaves(self, http: httpx.AsyncClient) -> None:
        created = await create_run(http, GATED)  # waits at its gate: the stream would go on
        url = f"{run_url(created['runId'])}/logs"
        before = await finished_log_requests(http)
        async with http.stream("GET", url, params={"follow": "true"}, headers=READER) as response:
            assert json.loads(await anext(response.aiter_lines()))["eventType"] == "run.created"
        # The server ends the request (and records its latency) once the client has gone.
        for _ in range(50):
            if await finished_log_requests(http) == before + 1:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the followed stream went on after the client left")

    async def test_follow_with_after_on_a_finished_run_ends_at_once(
        self, http: httpx.AsyncClient
    ) -> None:
        created = await create_run(http, ECHO, inputs={"who": "ada"})
        await wait_for_run(http, created["runId"], status_is("succeeded"))
        response = await http.get(
            f"{run_url(created['runId'])}/logs",
            params={"follow": "true", "after": 2},
            headers=READER,
        )
        entries = parse(response.text)
        assert entries[0]["sequence"] == 3 and entries[-1]["eventType"] == "run.completed"

    async def test_unknown_run_is_404(self, http: httpx.AsyncClient) -> None:
        response = await http.get(f"{run_url('no-such-run')}/logs", headers=READER)
        assert response.status_code == 404
        assert error_code(response) == "run_not_found"

    async def test_negative_after_is_400(self, http: httpx.AsyncClient) -> None:
        response = await http.get(f"{run_url('any')}/logs", params={"after": -1}, headers=READER)
        assert response.status_code == 400
        assert "after" in response.json()["error"]["message"]
