"""Idempotency-Key on POST /runs, approvals, cancel and webhooks: a retry gets the first answer
again (Idempotent-Replay: true) and does nothing; another request under the key is a 409. The
keys live in the database: the tests of the database's part run on SQLite and on PostgreSQL
(`any_http`), among them the race of many identical requests (one run) and an answer the
database refuses to record (still one run, one vote)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import text
from temporalio.testing import WorkflowEnvironment

from api.idempotency import fingerprint
from db.engine import Database
from db.idempotency import IdempotencyStore
from tests.api.packs import ECHO, GATED, SLOW
from tests.api.support import (
    APPROVER,
    RUNS,
    bearer,
    create_run,
    error_code,
    in_tenant,
    run_url,
    status_is,
    wait_for_run,
)
from tests.helpers import unique
from workflows.contract.names import SA_TENANT, workflow_id

if TYPE_CHECKING:
    from tests.api.conftest import Stack

REPLAY = "idempotent-replay"
WEBHOOKS = "/v1/task-runner/webhooks"
APPROVER_ROLE = ("taskrunner.operator",)
FAIL_PREFIX = "fail-record-"

SQLITE_TRIGGER = f"""
CREATE TRIGGER IF NOT EXISTS fail_record BEFORE UPDATE OF response_status ON idempotency_keys
WHEN NEW.response_status IS NOT NULL AND NEW.key LIKE '{FAIL_PREFIX}%'
BEGIN SELECT RAISE(ABORT, 'injected: the answer cannot be recorded'); END
"""
POSTGRES_TRIGGER = (
    f"""
CREATE OR REPLACE FUNCTION fail_record() RETURNS trigger AS $$
BEGIN
  IF NEW.response_status IS NOT NULL AND NEW.key LIKE '{FAIL_PREFIX}%' THEN
    RAISE EXCEPTION 'injected: the answer cannot be recorded';
  END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql
""",
    "DROP TRIGGER IF EXISTS fail_record ON idempotency_keys",
    """CREATE TRIGGER fail_record BEFORE UPDATE ON idempotency_keys
FOR EACH ROW EXECUTE FUNCTION fail_record()""",
)


@asynccontextmanager
async def database_of(stack: Stack) -> AsyncIterator[Database]:
    assert stack.settings.database_url is not None
    database = Database(stack.settings.database_url)
    try:
        yield database
    finally:
        await database.dispose()


@asynccontextmanager
async def failing_records(stack: Stack) -> AsyncIterator[None]:
    """While open, the database refuses to record an answer for keys starting FAIL_PREFIX."""
    async with database_of(stack) as database:
        statements = (SQLITE_TRIGGER,) if database.is_sqlite else POSTGRES_TRIGGER
        async with database.engine.begin() as conn:
            for statement in statements:
                await conn.execute(text(statement))
        try:
            yield
        finally:
            async with database.engine.begin() as conn:
                if database.is_sqlite:
                    await conn.execute(text("DROP TRIGGER IF EXISTS fail_record"))
                else:
                    await conn.execute(text(POSTGRES_TRIGGER[1]))


async def stored(stack: Stack, tenant: str, key: str) -> int | None:
    """The status recorded for the key (None: no answer recorded)."""
    async with database_of(stack) as database:
        record = await IdempotencyStore(database).get(tenant, key)
    return None if record is None or record.response is None else record.response.status


async def runs_of(env: WorkflowEnvironment, tenant: str) -> set[str]:
    """Every run of the tenant Temporal has, from its visibility (which trails by a moment: read
    until it shows runs, then once more a second later)."""

    async def listed() -> set[str]:
        query = f"{SA_TENANT.name} = '{tenant}'"
        return {w.id async for w in env.client.list_workflows(query)}

    deadline = time.monotonic() + 15
    found = await listed()
    while not found and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        found = await listed()
    await asyncio.sleep(1)
    prefix = workflow_id(tenant, "")
    return {found.removeprefix(prefix) for found in await listed()}


def as_approver(tenant: str) -> dict[str, str]:
    return in_tenant(tenant, *APPROVER_ROLE, grants=["packs.approve"])


def keyed(key: str, headers: dict[str, str] = APPROVER, **more: str) -> dict[str, str]:
    return {"Idempotency-Key": key, **headers, **more}


def same_answer(first: httpx.Response, second: httpx.Response) -> None:
    assert REPLAY not in first.headers
    assert second.headers[REPLAY] == "true"
    assert second.status_code == first.status_code
    assert second.content == first.content
    for header in ("location", "content-type"):
        assert second.headers.get(header) == first.headers.get(header), header


class TestCreateRun:
    async def test_a_retry_replays_the_first_answer_and_starts_nothing(
        self, http: httpx.AsyncClient
    ) -> None:
        key = unique("key")
        body = {"manifest": ECHO, "inputs": {"who": "x"}}  # no runId: each create makes one up
        first = await http.post(RUNS, json=body, headers=keyed(key))
        assert first.status_code == 201, first.text
        second = await http.post(RUNS, json=body, headers=keyed(key))
        same_answer(first, second)
        # Key order and spacing are not part of the request.
        reordered = await http.post(
            RUNS,
            content='{"inputs": {"who": "x"},  "manifest": ' + json.dumps(ECHO) + "}",
            headers=keyed(key, **{"Content-Type": "application/json"}),
        )
        same_answer(first, reordered)
        await wait_for_run(http, first.json()["runId"], status_is("succeeded"))

    async def test_same_key_another_request_is_409(self, http: httpx.AsyncClient) -> None:
        key = unique("key")
        first = await http.post(
            RUNS, json={"manifest": ECHO, "inputs": {"who": "x"}}, headers=keyed(key)
        )
        assert first.status_code == 201
        other = await http.post(
            RUNS, json={"manifest": ECHO, "inputs": {"who": "y"}}, headers=keyed(key)
        )
        assert other.status_code == 409
        assert error_code(other) == "idempotency_conflict"
        # Another caller's identical request is another request too.
        carol = bearer("taskrunner.operator", sub="user:carol")
        theirs = await http.post(
            RUNS, json={"manifest": ECHO, "inputs": {"who": "x"}}, headers=keyed(key, carol)
        )
        assert theirs.status_code == 409

    async def test_keys_are_scoped_by_tenant(self, http: httpx.AsyncClient) -> None:
        key = unique("key")
        body = {"manifest": ECHO, "inputs": {"who": "x"}}
        ids = set()
        for tenant in (unique("acme"), unique("globex")):
            response = await http.post(
                RUNS,
                json=body,
                headers=keyed(key, in_tenant(tenant, *APPROVER_ROLE, grants=["packs.approve"])),
            )
            assert response.status_code == 201 and REPLAY not in response.headers
            ids.add(response.json()["runId"])
        assert len(ids) == 2

    async def test_a_final_refusal_is_replayed_too(self, http: httpx.AsyncClient) -> None:
        existing = await create_run(http, ECHO, inputs={"who": "x"})
        key = unique("key")
        body = {"runId": existing["runId"], "manifest": ECHO, "inputs": {"who": "x"}}
        first = await http.post(RUNS, json=body, headers=keyed(key))
        assert (first.status_code, error_code(first)) == (409, "run_exists")
        same_answer(first, await http.post(RUNS, json=body, headers=keyed(key)))
        invalid = {"manifest": ECHO.replace("TaskPack", "Pack")}
        key = unique("key")
        first = await http.post(RUNS, json=invalid, headers=keyed(key))
        assert first.status_code == 400
        same_answer(first, await http.post(RUNS, json=invalid, headers=keyed(key)))

    async def test_auth_failures_are_not_recorded(self, http: httpx.AsyncClient) -> None:
        key = unique("key")
        body = {"manifest": ECHO, "inputs": {"who": "x"}}
        viewer = await http.post(RUNS, json=body, headers=keyed(key, bearer("taskrunner.viewer")))
        assert viewer.status_code == 403
        operator = await http.post(RUNS, json=body, headers=keyed(key))
        assert operator.status_code == 201 and REPLAY not in operator.headers

    async def test_bad_keys_are_400(self, http: httpx.AsyncClient) -> None:
        body = {"manifest": ECHO, "inputs": {"who": "x"}}
        for key in ("has space", "x" * 256, ""):
            response = await http.post(RUNS, json=body, headers=keyed(key))
            assert response.status_code == 400, key
            assert "Idempotency-Key" in response.json()["error"]["message"]

    async def test_a_body_too_deep_to_parse_is_refused_as_without_a_key(
        self, http: httpx.AsyncClient
    ) -> None:
        deep = '{"manifest": "x", "inputs": {"a": ' + "[" * 5000 + "]" * 5000 + "}}"
        headers = {"Content-Type": "application/json"}
        plain = await http.post(RUNS, content=deep, headers={**APPROVER, **headers})
        keyed_ = await http.post(RUNS, content=deep, headers=keyed(unique("key"), **headers))
        assert plain.status_code == keyed_.status_code == 400, keyed_.text[:300]

    async def test_a_key_in_use_is_409_in_progress(
        self, any_http: httpx.AsyncClient, any_stack: Stack
    ) -> None:
        # Plant what a request still being served leaves in the database: its claim.
        tenant, key = unique("busy"), unique("key")
        body = b'{"manifest": "x"}'
        async with database_of(any_stack) as database:
            await IdempotencyStore(database).claim(
                tenant,
                key,
                fingerprint=fingerprint("POST", RUNS, tenant, "user:alice", body),
                holder="another-request",
                now=datetime.now(UTC),
                lock_for=timedelta(minutes=5),
                keep_for=timedelta(hours=24),
            )
        response = await any_http.post(
            RUNS,
            content=body,
            headers=keyed(
                key,
                in_tenant(tenant, *APPROVER_ROLE, grants=["packs.approve"]),
                **{"Content-Type": "application/json"},
            ),
        )
        assert response.status_code == 409
        assert error_code(response) == "idempotency_in_progress"
        assert response.headers["retry-after"] == "1"


class TestAtAnyConcurrency:
    async def test_many_concurrent_identical_keyed_creates_start_one_run(
        self, any_http: httpx.AsyncClient, dev_env: WorkflowEnvironment
    ) -> None:
        tenant, key = unique("race"), unique("key")
        headers = keyed(key, as_approver(tenant))
        body = {"manifest": ECHO, "inputs": {"who": "x"}}
        answers = await asyncio.gather(
            *(any_http.post(RUNS, json=body, headers=headers) for _ in range(40))
        )
        statuses = Counter(a.status_code for a in answers)
        assert set(statuses) <= {201, 409}, statuses
        assert statuses[201] >= 1
        busy = [a for a in answers if a.status_code == 409]
        assert all(error_code(a) == "idempotency_in_progress" for a in busy)
        run_ids = {a.json()["runId"] for a in answers if a.status_code == 201}
        assert len(run_ids) == 1
        # The ones told to wait get the same run once the first answer is recorded.
        again = await any_http.post(RUNS, json=body, headers=headers)
        same = again.json()["runId"]
        assert (again.status_code, again.headers[REPLAY], {same}) == (201, "true", run_ids)
        assert await runs_of(dev_env, tenant) == run_ids

    async def test_distinct_keys_at_once_each_start_their_run(
        self, any_http: httpx.AsyncClient, dev_env: WorkflowEnvironment
    ) -> None:
        tenant = unique("many")
        body = {"manifest": ECHO, "inputs": {"who": "x"}}
        keys = [unique("key") for _ in range(30)]
        answers = await asyncio.gather(
            *(any_http.post(RUNS, json=body, headers=keyed(k, as_approver(tenant))) for k in keys)
        )
        assert [a.status_code for a in answers] == [201] * len(keys), [
            a.text[:200] for a in answers if a.status_code != 201
        ]
        run_ids = {a.json()["runId"] for a in answers}
        assert len(run_ids) == len(keys)
        assert await runs_of(dev_env, tenant) == run_ids


class TestWhenTheAnswerCannotBeRecorded:
    """The database refuses to record the answer (a trigger, really raising in the database,
    for keys starting `fail-record-`): the work still answers, and a retry with the key finds
    that work instead of doing it again."""

    async def test_a_create_answers_its_run_and_the_retry_finds_it(
        self, any_http: httpx.AsyncClient, any_stack: Stack, dev_env: WorkflowEnvironment
    ) -> None:
        tenant, key = unique("lost"), unique("fail-record")
        headers = keyed(key, as_approver(tenant))
        body = {"manifest": ECHO, "inputs": {"who": "x"}}
        async with failing_records(any_stack):
            first = await any_http.post(RUNS, json=body, headers=headers)
            assert first.status_code == 201, first.text
            run_id = first.json()["runId"]
            assert await stored(any_stack, tenant, key) is None  # nothing was recorded
            retry = await any_http.post(RUNS, json=body, headers=headers)
            assert retry.status_code == 201, retry.text
            assert (retry.json()["runId"], retry.headers[REPLAY]) == (run_id, "true")
        # Recording works again: the next retry records, the one after replays the record.
        third = await any_http.post(RUNS, json=body, headers=headers)
        assert (third.status_code, third.json()["runId"]) == (201, run_id)
        assert await stored(any_stack, tenant, key) == 201
        fourth = await any_http.post(RUNS, json=body, headers=headers)
        assert third.headers[REPLAY] == fourth.headers[REPLAY] == "true"
        assert (fourth.status_code, fourth.content) == (third.status_code, third.content)
        assert await runs_of(dev_env, tenant) == {run_id}

    async def test_an_approval_is_one_vote_however_often_it_is_retried(
        self, any_http: httpx.AsyncClient, any_stack: Stack
    ) -> None:
        created = await create_run(any_http, GATED)
        state = await wait_for_run(any_http, created["runId"], status_is("awaiting-approval"))
        url = f"{run_url(state['runId'])}/approvals/release-manager"
        body = {"decision": "approved", "planHash": state["planHash"]}
        key = unique("fail-record")
        async with failing_records(any_stack):
            first = await any_http.post(url, json=body, headers=keyed(key))
            assert first.status_code == 200, first.text
            # The same update id again: Temporal answers with the first outcome, no 2nd vote
            # (without the key, the same approver again is a 409).
            retry = await any_http.post(url, json=body, headers=keyed(key))
            assert retry.status_code == 200, retry.text
            assert retry.json() == first.json()
        done = await wait_for_run(any_http, state["runId"], status_is("succeeded"))
        assert len(done["approvals"][0]["decisions"]) == 1

    async def test_a_cancel_retried_after_its_run_ended_is_still_202(
        self, any_http: httpx.AsyncClient, any_stack: Stack
    ) -> None:
        created = await create_run(any_http, SLOW)
        url = f"{run_url(created['runId'])}/cancel"
        key = unique("fail-record")
        async with failing_records(any_stack):
            first = await any_http.post(url, headers=keyed(key))
            assert first.status_code == 202, first.text
            await wait_for_run(any_http, created["runId"], status_is("cancelled"))
            retry = await any_http.post(url, headers=keyed(key))
            assert retry.status_code == 202, retry.text
        unkeyed = await any_http.post(url, headers=APPROVER)
        assert (unkeyed.status_code, error_code(unkeyed)) == (409, "run_finished")

    async def test_a_webhook_is_registered_once_however_often_it_is_retried(
        self, any_http: httpx.AsyncClient, any_stack: Stack
    ) -> None:
        admin = in_tenant(unique("hooks"), "taskrunner.admin")
        body = {
            "url": "https://hooks.example.com/x",
            "events": ["run.completed"],
            "secret": "s" * 20,
        }
        key = unique("fail-record")
        async with failing_records(any_stack):
            first = await any_http.post(WEBHOOKS, json=body, headers=keyed(key, admin))
            retry = await any_http.post(WEBHOOKS, json=body, headers=keyed(key, admin))
        assert first.status_code == retry.status_code == 201, retry.text
        assert retry.json() == first.json()
        listed = await any_http.get(WEBHOOKS, headers=admin)
        assert [w["id"] for w in listed.json()["webhooks"]] == [first.json()["id"]]


class TestApproveAndCancel:
    async def test_approval_retry_is_replayed_not_refused(self, http: httpx.AsyncClient) -> None:
        created = await create_run(http, GATED)
        state = await wait_for_run(http, created["runId"], status_is("awaiting-approval"))
        url = f"{run_url(state['runId'])}/approvals/release-manager"
        body = {"decision": "approved", "planHash": state["planHash"]}
        key = unique("key")
        first = await http.post(url, json=body, headers=keyed(key))
        assert first.status_code == 200, first.text
        # Without the key the second POST would be a 409 (a repeat approver).
        second = await http.post(url, json=body, headers=keyed(key))
        same_answer(first, second)
        unkeyed = await http.post(url, json=body, headers=APPROVER)
        assert unkeyed.status_code == 409
        conflict = await http.post(
            url, json={**body, "summary": "changed my mind"}, headers=keyed(key)
        )
        assert (conflict.status_code, error_code(conflict)) == (409, "idempotency_conflict")
        await wait_for_run(http, state["runId"], status_is("succeeded"))

    async def test_cancel_retry_is_replayed(self, http: httpx.AsyncClient) -> None:
        created = await create_run(http, SLOW)
        url = f"{run_url(created['runId'])}/cancel"
        key = unique("key")
        first = await http.post(url, headers=keyed(key))
        assert first.status_code == 202
        same_answer(first, await http.post(url, headers=keyed(key)))
        other = await http.post(f"{run_url(unique('run'))}/cancel", headers=keyed(key))
        assert (other.status_code, error_code(other)) == (409, "idempotency_conflict")
        await wait_for_run(http, created["runId"], status_is("cancelled"))

    async def test_a_not_found_is_not_recorded(self, http: httpx.AsyncClient) -> None:
        key = unique("key")
        url = f"{run_url(unique('run'))}/cancel"
        for _ in range(2):
            response = await http.post(url, headers=keyed(key))
            assert response.status_code == 404 and REPLAY not in response.headers


class TestRegisterWebhook:
    async def test_registration_retry_registers_once(self, http: httpx.AsyncClient) -> None:
        admin = in_tenant(unique("hooks"), "taskrunner.admin")
        body: dict[str, Any] = {
            "url": "https://hooks.example.com/x",
            "events": ["run.completed"],
            "secret": "s" * 20,
        }
        key = unique("key")
        first = await http.post("/v1/task-runner/webhooks", json=body, headers=keyed(key, admin))
        assert first.status_code == 201
        same_answer(
            first, await http.post("/v1/task-runner/webhooks", json=body, headers=keyed(key, admin))
        )
        listed = await http.get("/v1/task-runner/webhooks", headers=admin)
        assert [w["id"] for w in listed.json()["webhooks"]] == [first.json()["id"]]
