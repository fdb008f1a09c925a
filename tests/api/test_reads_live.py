"""Reads of a run against a real worker that goes away: a live run's last known state answers
(marked stale, with its age) instead of a 503; a finished run is answered with no worker at all;
an unchanged state answers `If-None-Match` with 304."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from cli.settings import DevSettings as Settings
from tests.api.packs import ECHO, FAILING, GATED
from tests.api.support import (
    APPROVER,
    READER,
    SECRET,
    SIGNING_KEY,
    create_run,
    run_url,
    serve,
    status_is,
    wait_for_run,
)
from tests.helpers import unique, worker_for


def settings_for(dev_env: WorkflowEnvironment, data_dir: Path) -> Settings:
    return Settings(
        temporal_address=dev_env.client.service_client.config.target_host,
        temporal_namespace=dev_env.client.namespace,
        task_queue=unique("reads-tq"),
        data_dir=data_dir,
        auth_enabled=True,
        jwt_hs256_secret=SECRET,
        signing_key=SIGNING_KEY,
        query_timeout_seconds=10,
        read_patience_seconds=0.5,
    )


@asynccontextmanager
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An API of its own (so nothing it knows comes from another test)."""
    with serve(create_app(settings)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            yield http


class TestWorkerOutage:
    async def test_a_live_run_answers_its_last_known_state_marked_stale(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        settings = settings_for(dev_env, tmp_path)
        async with api(settings) as http:
            async with worker_for(dev_env.client, tmp_path, settings.task_queue):
                run_id = (await create_run(http, GATED))["runId"]
                await wait_for_run(http, run_id, status_is("awaiting-approval"))
            # The worker is gone: no one can answer the run's query now.
            time.sleep(2.5)  # older than any state the API may answer without asking
            began = time.monotonic()
            response = await http.get(run_url(run_id), headers=READER)
            took = time.monotonic() - began
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "awaiting-approval"
        assert "Stale" in response.headers["Warning"]
        assert int(response.headers["Age"]) >= 2
        assert took < settings.query_timeout_seconds / 2

    async def test_a_never_read_run_without_a_worker_is_a_503_not_a_guess(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        settings = settings_for(dev_env, tmp_path).model_copy(update={"query_timeout_seconds": 1.5})
        async with (
            worker_for(dev_env.client, tmp_path, settings.task_queue),
            api(settings) as http,
        ):
            run_id = (await create_run(http, GATED))["runId"]
            await wait_for_run(http, run_id, status_is("awaiting-approval"))
        async with api(settings) as fresh:
            response = await fresh.get(run_url(run_id), headers=READER)
        assert response.status_code == 503, response.text
        assert "Retry-After" in response.headers

    async def test_a_finished_run_is_read_without_a_worker(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        settings = settings_for(dev_env, tmp_path)
        async with (
            worker_for(dev_env.client, tmp_path, settings.task_queue),
            api(settings) as http,
        ):
            run_id = (await create_run(http, ECHO, inputs={"who": "x"}))["runId"]
            await wait_for_run(http, run_id, status_is("succeeded"))
        # A new API (it knows nothing) and no worker at all: the server alone answers.
        async with api(settings) as fresh:
            response = await fresh.get(run_url(run_id), headers=READER)
            page = await fresh.get(run_url(run_id), headers=READER, params={"stepsOffset": 1})
        assert response.status_code == 200, response.text
        state = response.json()
        assert state["status"] == "succeeded"
        assert [s["stepId"] for s in state["steps"]] == ["hello", "done"]
        assert all(s["status"] == "Succeeded" for s in state["steps"])
        assert "Warning" not in response.headers
        assert page.status_code == 200 and [s["stepId"] for s in page.json()["steps"]] == ["done"]

    async def test_a_failed_run_is_read_without_a_worker(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        # Its workflow closed as Failed (no result): the state comes from the failure's detail.
        settings = settings_for(dev_env, tmp_path)
        async with (
            worker_for(dev_env.client, tmp_path, settings.task_queue),
            api(settings) as http,
        ):
            run_id = (await create_run(http, FAILING))["runId"]
            await wait_for_run(http, run_id, status_is("failed"))
        async with api(settings) as fresh:
            response = await fresh.get(run_url(run_id), headers=READER)
        assert response.status_code == 200, response.text
        state = response.json()
        assert (state["status"], state["error"]) == ("failed", "step build failed (step-failed)")
        assert [s["status"] for s in state["steps"]] == ["Failed", "Skipped"]
        assert "Warning" not in response.headers


class TestConditionalReads:
    async def test_an_unchanged_state_is_a_304_and_a_changed_one_is_not(
        self, dev_env: WorkflowEnvironment, tmp_path: Path
    ) -> None:
        settings = settings_for(dev_env, tmp_path)
        async with (
            worker_for(dev_env.client, tmp_path, settings.task_queue),
            api(settings) as http,
        ):
            created = await create_run(http, GATED)
            run_id = created["runId"]
            await wait_for_run(http, run_id, status_is("awaiting-approval"))
            first = await http.get(run_url(run_id), headers=READER)
            etag = first.headers["ETag"]
            again = await http.get(run_url(run_id), headers={**READER, "If-None-Match": etag})
            assert again.status_code == 304, again.text
            assert again.content == b""
            decided = await http.post(
                f"{run_url(run_id)}/approvals/release-manager",
                json={"decision": "approved", "planHash": created["planHash"]},
                headers=APPROVER,
            )
            assert decided.status_code == 200, decided.text
            # Read your own write: the decision shows at once, under a new ETag.
            after = await http.get(run_url(run_id), headers={**READER, "If-None-Match": etag})
            assert after.status_code == 200
            assert after.headers["ETag"] != etag
            assert after.json()["approvals"][0]["status"] == "approved"
