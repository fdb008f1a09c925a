"""GET /runs: a tenant's runs from Temporal visibility, filtered and paged."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.api.packs import ECHO, GATED, replaced
from tests.api.support import (
    APPROVER,
    READER,
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


def tenant_headers(tenant: str, base: dict[str, str]) -> dict[str, str]:
    """`base`'s role (READER or APPROVER) acting in `tenant`, with a token issued for it."""
    if base is APPROVER:
        return in_tenant(tenant, "taskrunner.operator", grants=["packs.approve"])
    assert base is READER
    return in_tenant(tenant, "taskrunner.viewer")


async def listing(
    http: httpx.AsyncClient, tenant: str, **params: Any
) -> tuple[int, dict[str, Any]]:
    response = await http.get(RUNS, params=params, headers=tenant_headers(tenant, READER))
    return response.status_code, response.json()


async def listed_ids(http: httpx.AsyncClient, tenant: str, **params: Any) -> list[str]:
    """Every run the filters match, all pages followed."""
    ids: list[str] = []
    token = None
    while True:
        query = {**params, **({"pageToken": token} if token else {})}
        status, body = await listing(http, tenant, **query)
        assert status == 200, body
        ids += [r["runId"] for r in body["runs"]]
        token = body.get("nextPageToken")
        if not token:
            return ids


async def eventually(http: httpx.AsyncClient, tenant: str, want: set[str], **params: Any) -> None:
    """Visibility trails the runs by a moment: poll until the filters match exactly `want`."""
    deadline = time.monotonic() + 20
    while True:
        got = await listed_ids(http, tenant, **params)
        if set(got) == want and len(got) == len(want):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"listing {params} gave {got}, wanted {sorted(want)}")
        await asyncio.sleep(0.2)


class Fleet:
    """Seven finished runs of one pack in a tenant of their own (four of plan A, three of plan
    B, created in two batches with a moment between), plus one run waiting at a gate."""

    def __init__(self) -> None:
        self.tenant = unique("list")
        self.pack = unique("pack")
        self.echo = replaced(ECHO, "name: api-echo", f"name: {self.pack}")
        self.gated = replaced(GATED, "name: example-gate-approval", f"name: {self.pack}")
        self.first: list[str] = []
        self.second: list[str] = []
        self.plan_a = ""
        self.plan_b = ""
        self.between = ""
        self.waiting = ""

    @property
    def finished(self) -> set[str]:
        return {*self.first, *self.second}

    async def create(self, http: httpx.AsyncClient) -> None:
        headers = tenant_headers(self.tenant, APPROVER)
        for who in ("a", "a", "a", "a"):
            run = await create_run(http, self.echo, inputs={"who": who}, headers=headers)
            self.first.append(run["runId"])
            self.plan_a = run["planHash"]
        await asyncio.sleep(0.05)
        self.between = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        await asyncio.sleep(0.05)
        for who in ("b", "b", "b"):
            run = await create_run(http, self.echo, inputs={"who": who}, headers=headers)
            self.second.append(run["runId"])
            self.plan_b = run["planHash"]
        for run_id in self.finished:
            await wait_for_run(
                http, run_id, status_is("succeeded"), headers=tenant_headers(self.tenant, READER)
            )
        gated = await create_run(http, self.gated, headers=headers)
        self.waiting = gated["runId"]
        await wait_for_run(
            http,
            self.waiting,
            status_is("awaiting-approval"),
            headers=tenant_headers(self.tenant, READER),
        )
        await eventually(http, self.tenant, self.finished, status="succeeded")
        await eventually(http, self.tenant, {self.waiting}, status="awaiting-approval")


@pytest.fixture(scope="module")
async def fleet(stack: Any) -> Any:
    built = Fleet()
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
        await built.create(http)
        yield built
        cancel = await http.post(
            f"{run_url(built.waiting)}/cancel", headers=tenant_headers(built.tenant, APPROVER)
        )
        assert cancel.status_code == 202


class TestListRuns:
    async def test_summaries(self, http: httpx.AsyncClient, fleet: Fleet) -> None:
        status, body = await listing(http, fleet.tenant, pack=fleet.pack, pageSize=500)
        assert status == 200
        runs = {r["runId"]: r for r in body["runs"]}
        assert set(runs) == fleet.finished | {fleet.waiting}
        assert "nextPageToken" not in body
        done = runs[fleet.first[0]]
        # A run of a posted manifest: no packDigest (that is for registry runs), no redriveOf.
        assert set(done) == {
            "runId",
            "pack",
            "packVersion",
            "status",
            "planHash",
            "createdAt",
            "closedAt",
        }
        assert (done["pack"], done["status"], done["planHash"]) == (
            fleet.pack,
            "succeeded",
            fleet.plan_a,
        )
        assert done["createdAt"].endswith("Z") and done["closedAt"] >= done["createdAt"]
        state = (
            await http.get(run_url(fleet.first[0]), headers=tenant_headers(fleet.tenant, READER))
        ).json()
        assert done["createdAt"] == state["createdAt"]
        waiting = runs[fleet.waiting]
        assert waiting["status"] == "awaiting-approval" and "closedAt" not in waiting

    async def test_pages_of_three_cover_every_run_once_in_a_stable_order(
        self, http: httpx.AsyncClient, fleet: Fleet
    ) -> None:
        pages: list[list[dict[str, Any]]] = []
        token = None
        while True:
            params: dict[str, Any] = {"pageSize": 3, **({"pageToken": token} if token else {})}
            status, body = await listing(http, fleet.tenant, **params)
            assert status == 200, body
            assert len(body["runs"]) <= 3
            pages.append(body["runs"])
            token = body.get("nextPageToken")
            if not token:
                break
        runs = [r for page in pages for r in page]
        ids = [r["runId"] for r in runs]
        assert len(ids) == len(set(ids)) == 8
        assert len([p for p in pages if p]) == 3
        # Open runs first, then finished ones, most recently finished first.
        assert ids[0] == fleet.waiting
        closed = [r["closedAt"] for r in runs[1:]]
        assert closed == sorted(closed, reverse=True)
        again = await listed_ids(http, fleet.tenant, pageSize=3)
        assert again == ids

    async def test_status_filter(self, http: httpx.AsyncClient, fleet: Fleet) -> None:
        assert set(await listed_ids(http, fleet.tenant, status="succeeded")) == fleet.finished
        assert await listed_ids(http, fleet.tenant, status="awaiting-approval") == [fleet.waiting]
        assert await listed_ids(http, fleet.tenant, status="failed") == []
        both = await listed_ids(http, fleet.tenant, status="succeeded,awaiting-approval")
        assert set(both) == fleet.finished | {fleet.waiting}
        repeated = await listed_ids(http, fleet.tenant, status=["running", "awaiting-approval"])
        assert repeated == [fleet.waiting]

    async def test_pack_and_plan_hash_filters(self, http: httpx.AsyncClient, fleet: Fleet) -> None:
        assert set(await listed_ids(http, fleet.tenant, planHash=fleet.plan_a)) == set(fleet.first)
        assert set(await listed_ids(http, fleet.tenant, planHash=fleet.plan_b)) == set(fleet.second)
        assert await listed_ids(http, fleet.tenant, pack="no-such-pack") == []
        mine = await listed_ids(http, fleet.tenant, pack=fleet.pack, status="succeeded")
        assert set(mine) == fleet.finished

    async def test_created_after_and_before(self, http: httpx.AsyncClient, fleet: Fleet) -> None:
        before = await listed_ids(
            http, fleet.tenant, createdBefore=fleet.between, status="succeeded"
        )
        assert set(before) == set(fleet.first)
        after = await listed_ids(http, fleet.tenant, createdAfter=fleet.between)
        assert set(after) == {*fleet.second, fleet.waiting}
        offset = fleet.between.replace("Z", "+00:00")
        assert set(await listed_ids(http, fleet.tenant, createdAfter=offset)) == set(after)
        assert await listed_ids(http, fleet.tenant, createdAfter="2999-01-01T00:00:00Z") == []

    async def test_tenant_scoped(self, http: httpx.AsyncClient, fleet: Fleet) -> None:
        assert await listed_ids(http, unique("other"), pack=fleet.pack) == []
        # The default tenant (no header) does not see them either.
        response = await http.get(RUNS, params={"pack": fleet.pack}, headers=READER)
        assert response.status_code == 200 and response.json()["runs"] == []

    async def test_page_token_belongs_to_its_filters(
        self, http: httpx.AsyncClient, fleet: Fleet
    ) -> None:
        status, body = await listing(http, fleet.tenant, pageSize=2)
        token = body["nextPageToken"]
        status, other = await listing(http, fleet.tenant, pageSize=2, pageToken=token, pack="x")
        assert status == 400 and other["error"]["code"] == "invalid_page_token"
        status, other = await listing(http, unique("other"), pageSize=2, pageToken=token)
        assert status == 400
        tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
        for bad in (tampered, "garbage", "x" * 300):
            status, other = await listing(http, fleet.tenant, pageToken=bad)
            assert status == 400, bad
            assert other["error"]["code"] == "invalid_page_token"

    async def test_bad_filter_values_are_400(self, http: httpx.AsyncClient) -> None:
        for params in (
            {"status": "done"},
            {"status": "succeeded,nope"},
            {"createdAfter": "yesterday"},
            {"createdAfter": "2025-01-01T00:00:00"},  # no offset
            {"createdBefore": "2025-01-01"},
            {"createdBefore": "9999-12-31T23:00:00-05:00"},  # past the last datetime in UTC
            {"planHash": "sha256:xyz"},
            {"pack": "it's"},
            {"pageSize": 0},
            {"pageSize": 501},
        ):
            response = await http.get(RUNS, params=params, headers=READER)
            assert response.status_code == 400, params
            assert error_code(response) in {"invalid_request", "invalid_page_token"}, params
            name = next(iter(params))
            assert name in response.json()["error"]["message"], params

    async def test_needs_a_viewer_token(self, http: httpx.AsyncClient) -> None:
        assert (await http.get(RUNS)).status_code == 401
        assert (await http.get(RUNS, headers=bearer("other.scope"))).status_code == 403
        assert (await http.get(RUNS, headers=READER)).status_code == 200
