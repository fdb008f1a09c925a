"""Hostile input: every manifest in tests/corpus/manifests and every request body in
tests/corpus/requests, POSTed to simulations and to runs, is a 4xx with the error envelope or a
PlanErrorResponse, never a 5xx, and the API is still healthy afterwards. The large ones are
built here rather than committed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.packs import FILES
from tests.api.support import APPROVER, READER, RUNS, create_run, run_url, status_is, wait_for_run

SIMULATIONS = "/v1/task-runner/simulations"
CORPUS = Path(__file__).resolve().parents[1] / "corpus"
MANIFESTS = sorted((CORPUS / "manifests").glob("*.yaml"))
REQUESTS = sorted((CORPUS / "requests").glob("*.json"))
ENDPOINTS = {"simulations": SIMULATIONS, "runs": RUNS}
JSON = {"Content-Type": "application/json", **APPROVER}
MIB = 1024 * 1024

HEAD = "apiVersion: stellaops.io/pack.v1\nkind: TaskPack\nmetadata: {name: big, version: 1.0.0}\n"
ARRAY_INPUT = (
    HEAD
    + "spec:\n  inputs: [{name: x, type: array}]\n  steps: [{id: a, run: {uses: 'builtin:noop'}}]\n"
)


def manifest_body(text: str, **extra: Any) -> bytes:
    return json.dumps({"manifest": text, **extra}).encode()


def big_string_manifest(size: int) -> bytes:
    return manifest_body(
        HEAD
        + "spec:\n  steps: [{id: a, run: {uses: 'builtin:echo', with: {x: '"
        + "A" * size
        + "'}}}]\n"
    )


def deep_json_inputs(depth: int) -> bytes:
    """A body whose `inputs.x` is `depth` nested arrays, for a pack that declares `x` an array."""
    head = json.dumps({"manifest": ARRAY_INPUT})[:-1]
    return (head + ', "inputs": {"x": ' + "[" * depth + "]" * depth + "}}").encode()


def deep_yaml(depth: int) -> bytes:
    return manifest_body(
        HEAD
        + "spec:\n  steps: [{id: a, run: {uses: 'builtin:echo', with: {x: "
        + "[" * depth
        + "]" * depth
        + "}}}]\n"
    )


def wide_inputs(keys: int) -> bytes:
    return manifest_body(ARRAY_INPUT, inputs={f"k{i}": i for i in range(keys)})


def long_id(length: int) -> bytes:
    return manifest_body(
        HEAD + "spec:\n  steps: [{id: " + "a" * length + ", run: {uses: 'builtin:noop'}}]\n"
    )


def many_steps_bad_last(count: int) -> bytes:
    steps = "".join(f"    - {{id: s{i}, run: {{uses: 'builtin:noop'}}}}\n" for i in range(count))
    return manifest_body(
        HEAD + "spec:\n  steps:\n" + steps + "    - {id: s0, run: {uses: 'builtin:noop'}}\n"
    )


GENERATED: dict[str, Callable[[], bytes]] = {
    "string-5MiB": lambda: big_string_manifest(5 * MIB),
    "string-1.5MiB-under-the-body-cap": lambda: big_string_manifest(3 * MIB // 2),
    "json-nested-100000": lambda: deep_json_inputs(100_000),
    "json-nested-900": lambda: deep_json_inputs(900),
    "json-nested-300": lambda: deep_json_inputs(300),
    "yaml-flow-nested-10000": lambda: deep_yaml(10_000),
    "inputs-100000-keys": lambda: wide_inputs(100_000),
    "step-id-100000-chars": lambda: long_id(100_000),
    "8000-steps-last-a-duplicate": lambda: many_steps_bad_last(8000),
}


def assert_refused(response: httpx.Response, what: str) -> None:
    assert 400 <= response.status_code < 500, (what, response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), what
    body = response.json()
    if "errors" in body:  # PlanErrorResponse
        assert set(body) == {"errors"} and body["errors"], (what, body)
        for error in body["errors"]:
            assert set(error) in ({"path", "message"}, {"path", "message", "line", "column"})
            assert isinstance(error["path"], str) and error["message"], (what, error)
            if "line" in error:  # where the node is in the YAML
                assert error["line"] >= 1 and error["column"] >= 1, (what, error)
    else:  # the error envelope
        assert set(body) == {"error"}, (what, body)
        assert set(body["error"]) == {"code", "message", "traceId"}, (what, body)
        assert body["error"]["traceId"] == response.headers["x-trace-id"], what


async def post_and_check(http: httpx.AsyncClient, path: str, body: bytes, what: str) -> None:
    response = await http.post(path, content=body, headers=JSON)
    assert_refused(response, what)
    health = await http.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}, what


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("file", MANIFESTS, ids=[p.name for p in MANIFESTS])
async def test_hostile_manifest(http: httpx.AsyncClient, file: Path, endpoint: str) -> None:
    text = file.read_bytes().decode("utf-8")
    await post_and_check(http, ENDPOINTS[endpoint], manifest_body(text), file.name)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("file", REQUESTS, ids=[p.name for p in REQUESTS])
async def test_hostile_request_body(http: httpx.AsyncClient, file: Path, endpoint: str) -> None:
    await post_and_check(http, ENDPOINTS[endpoint], file.read_bytes(), file.name)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("name", GENERATED)
async def test_generated_hostile_body(http: httpx.AsyncClient, name: str, endpoint: str) -> None:
    await post_and_check(http, ENDPOINTS[endpoint], GENERATED[name](), name)


class TestDuplicateJsonKeys:
    async def test_a_repeated_key_is_400_malformed_json(self, http: httpx.AsyncClient) -> None:
        body = (CORPUS / "requests" / "duplicate-key.json").read_bytes()
        for path in ENDPOINTS.values():
            response = await http.post(path, content=body, headers=JSON)
            assert response.status_code == 400
            error = response.json()["error"]
            assert error["code"] == "malformed_json"
            assert "duplicate key 'manifest'" in error["message"]

    async def test_also_without_a_content_type(self, http: httpx.AsyncClient) -> None:
        body = (CORPUS / "requests" / "duplicate-nested-key.json").read_bytes()
        response = await http.post(SIMULATIONS, content=body, headers=APPROVER)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "malformed_json"

    async def test_equal_keys_in_different_objects_are_fine(self, http: httpx.AsyncClient) -> None:
        body = {"manifest": ARRAY_INPUT, "inputs": {"x": [{"a": 1}, {"a": 2}]}}
        response = await http.post(SIMULATIONS, json=body, headers=APPROVER)
        assert response.status_code == 200, response.text


class TestOtherContentTypes:
    @pytest.mark.parametrize(
        "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
    )
    async def test_a_body_that_is_not_json_is_400(
        self, http: httpx.AsyncClient, content_type: str
    ) -> None:
        body = manifest_body(ARRAY_INPUT)
        for path in ENDPOINTS.values():
            response = await http.post(
                path, content=body, headers={"Content-Type": content_type, **APPROVER}
            )
            assert_refused(response, content_type)


async def test_still_healthy_and_ready(http: httpx.AsyncClient) -> None:
    assert (await http.get("/healthz")).status_code == 200
    assert (await http.get("/readyz")).status_code == 200


class TestArtifactNamesFromTheUrl:
    async def test_traversal_never_serves_a_file(self, http: httpx.AsyncClient) -> None:
        created = await create_run(http, FILES)
        run_id = created["runId"]
        await wait_for_run(http, run_id, status_is("succeeded"))
        url = f"{run_url(run_id)}/artifacts"
        assert (await http.get(f"{url}/report", headers=READER)).text == "report body"
        # Percent-encoded: a client would resolve a literal `..` itself before sending.
        for name in (
            "%2e%2e",
            "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
            "%2Fetc%2Fpasswd",
            "report%00.txt",
            "report%2F..%2F..%2Fworkspace%2Fout%2Freport.txt",
            "hello.stdout%2F..",
            "..%5C..%5Cwindows",
        ):
            response = await http.get(f"{url}/{name}", headers=READER)
            assert response.status_code in (400, 404), (name, response.status_code)
            assert response.headers["content-type"].startswith("application/json"), name
            assert "root:" not in response.text and "report body" not in response.text, name
