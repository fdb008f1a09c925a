"""Schedules over REST against the real stack: a schedule of a registered pack fires runs (a
short real interval: every 2 seconds), pauses, unpauses, fires on demand and is deleted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from tests.api.support import APPROVER, READER, bearer, error_code
from tests.helpers import unique
from workflows.contract.names import workflow_id

PREFIX = "/v1/task-runner"
SCHEDULES = f"{PREFIX}/schedules"
ADMIN = bearer("taskrunner.admin")


def pack(name: str) -> str:
    return f"""
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {{name: {name}, version: 1.0.0}}
spec:
  inputs:
    - {{name: who, type: string, required: true}}
  steps:
    - {{id: hello, run: {{uses: "builtin:echo", with: {{greeting: "hello {{{{ inputs.who }}}}"}}}}}}
"""


async def runs_of(http: httpx.AsyncClient, name: str) -> list[dict[str, Any]]:
    response = await http.get(f"{PREFIX}/runs", params={"pack": name}, headers=READER)
    assert response.status_code == 200, response.text
    runs: list[dict[str, Any]] = response.json()["runs"]
    return runs


@pytest.fixture
async def scheduled(http: httpx.AsyncClient) -> AsyncIterator[tuple[str, str]]:
    """A registered pack and a schedule of it that fires every 2 seconds; deleted afterwards."""
    name, schedule = unique("sched-pack"), unique("every2s")
    published = await http.post(f"{PREFIX}/packs", json={"manifest": pack(name)}, headers=ADMIN)
    assert published.status_code == 201
    created = await http.post(
        SCHEDULES,
        json={
            "scheduleId": schedule,
            "pack": {"name": name},
            "inputs": {"who": "cron"},
            "cron": "*/2 * * * * * *",  # seconds, minutes, ..., year: every 2 seconds
        },
        headers=APPROVER,
    )
    assert created.status_code == 201, created.text
    try:
        yield name, schedule
    finally:
        await http.delete(f"{SCHEDULES}/{schedule}", headers=APPROVER)


class TestSchedules:
    async def test_a_schedule_fires_runs_of_its_pack(
        self, http: httpx.AsyncClient, scheduled: tuple[str, str]
    ) -> None:
        name, schedule = scheduled
        record = (await http.get(f"{SCHEDULES}/{schedule}", headers=READER)).json()
        assert (record["pack"], record["packVersion"], record["paused"]) == (name, "1.0.0", False)
        assert record["overlapPolicy"] == "skip" and record["nextRunTimes"]
        assert schedule in [
            s["scheduleId"] for s in (await http.get(SCHEDULES, headers=READER)).json()["schedules"]
        ]

        deadline = time.monotonic() + 60
        while True:
            done = [r for r in await runs_of(http, name) if r["status"] == "succeeded"]
            if done:
                break
            assert time.monotonic() < deadline, "the schedule never fired a run that succeeded"
            await asyncio.sleep(0.5)
        run_id = done[0]["runId"]
        assert run_id.startswith(f"{schedule}-")
        # The listing names the version and the registered digest the run ran.
        assert done[0]["packVersion"] == "1.0.0" and done[0]["packDigest"].startswith("sha256:")
        state = (await http.get(f"{PREFIX}/runs/{run_id}", headers=READER)).json()
        assert state["steps"][0]["status"] == "Succeeded"
        assert state["packDigest"].startswith("sha256:")

    async def test_pause_unpause_trigger_delete(
        self, http: httpx.AsyncClient, scheduled: tuple[str, str]
    ) -> None:
        name, schedule = scheduled
        paused = await http.post(
            f"{SCHEDULES}/{schedule}/pause", json={"note": "maintenance"}, headers=APPROVER
        )
        assert paused.status_code == 200, paused.text
        assert (paused.json()["paused"], paused.json()["note"]) == (True, "maintenance")
        before = len(await runs_of(http, name))
        triggered = await http.post(f"{SCHEDULES}/{schedule}/trigger", headers=APPROVER)
        assert triggered.status_code == 202
        deadline = time.monotonic() + 30
        while len(await runs_of(http, name)) <= before:
            assert time.monotonic() < deadline, "trigger started no run"
            await asyncio.sleep(0.5)
        unpaused = await http.post(f"{SCHEDULES}/{schedule}/unpause", headers=APPROVER)
        assert unpaused.json()["paused"] is False

        deleted = await http.delete(f"{SCHEDULES}/{schedule}", headers=APPROVER)
        assert deleted.status_code == 204
        gone = await http.get(f"{SCHEDULES}/{schedule}", headers=READER)
        assert (gone.status_code, error_code(gone)) == (404, "schedule_not_found")

    async def test_bad_schedules(self, http: httpx.AsyncClient) -> None:
        name = unique("sched-pack")
        await http.post(f"{PREFIX}/packs", json={"manifest": pack(name)}, headers=ADMIN)
        body = {"scheduleId": unique("bad"), "pack": {"name": name}, "inputs": {"who": "x"}}
        bad_cron = await http.post(
            SCHEDULES, json={**body, "cron": "every tuesday"}, headers=APPROVER
        )
        assert (bad_cron.status_code, error_code(bad_cron)) == (400, "invalid_schedule")
        # The refused schedule left nothing behind: its id is free.
        assert (
            await http.get(f"{SCHEDULES}/{body['scheduleId']}", headers=READER)
        ).status_code == 404
        no_pack = await http.post(
            SCHEDULES,
            json={**body, "pack": {"name": unique("none")}, "cron": "0 * * * *"},
            headers=APPROVER,
        )
        assert (no_pack.status_code, error_code(no_pack)) == (404, "pack_not_found")
        missing_input = await http.post(
            SCHEDULES, json={**body, "inputs": {}, "cron": "0 * * * *"}, headers=APPROVER
        )
        assert missing_input.status_code == 400 and "errors" in missing_input.json()
        reader = await http.post(SCHEDULES, json={**body, "cron": "0 * * * *"}, headers=READER)
        assert reader.status_code == 403
        first = await http.post(SCHEDULES, json={**body, "cron": "0 0 1 1 *"}, headers=APPROVER)
        assert first.status_code == 201, first.text
        again = await http.post(SCHEDULES, json={**body, "cron": "0 0 1 1 *"}, headers=APPROVER)
        assert (again.status_code, error_code(again)) == (409, "schedule_exists")
        await http.delete(f"{SCHEDULES}/{body['scheduleId']}", headers=APPROVER)

    async def test_a_scheduled_run_that_fails_closes_failed_and_the_schedule_goes_on(
        self, http: httpx.AsyncClient, dev_env: WorkflowEnvironment
    ) -> None:
        # The run is the schedule's workflow's child: its workflow closing Failed must not fail
        # the schedule's own workflow, nor stop the schedule.
        name, schedule = unique("sched-fail"), unique("every2s")
        failing = (
            pack(name)
            .replace(
                '{id: hello, run: {uses: "builtin:echo"', '{id: hello, run: {uses: "builtin:fail"'
            )
            .replace('with: {greeting: "hello {{ inputs.who }}"}', 'with: {message: "no"}')
        )
        published = await http.post(f"{PREFIX}/packs", json={"manifest": failing}, headers=ADMIN)
        assert published.status_code == 201, published.text
        created = await http.post(
            SCHEDULES,
            json={
                "scheduleId": schedule,
                "pack": {"name": name},
                "inputs": {"who": "cron"},
                "cron": "*/2 * * * * * *",
            },
            headers=APPROVER,
        )
        assert created.status_code == 201, created.text
        try:
            deadline = time.monotonic() + 60
            while (
                len(failed := [r for r in await runs_of(http, name) if r["status"] == "failed"]) < 2
            ):
                assert time.monotonic() < deadline, "the schedule did not go on firing"
                await asyncio.sleep(0.5)
        finally:
            await http.delete(f"{SCHEDULES}/{schedule}", headers=APPROVER)
        run = dev_env.client.get_workflow_handle(workflow_id("default", failed[-1]["runId"]))
        described = await run.describe()
        assert described.status == WorkflowExecutionStatus.FAILED
        assert described.parent_id is not None
        parent = dev_env.client.get_workflow_handle(described.parent_id)
        for _ in range(50):  # it closes right after its child
            status = (await parent.describe()).status
            if status != WorkflowExecutionStatus.RUNNING:
                break
            await asyncio.sleep(0.1)
        assert status == WorkflowExecutionStatus.COMPLETED
