"""What every endpoint does with a bad request: the error envelope, never a stack trace."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx

from tests.api.packs import ECHO, GATED
from tests.api.support import APPROVER, READER, RUNS, create_run, error_code, run_url
from tests.helpers import unique

SIMULATIONS = "/v1/task-runner/simulations"
MIB = 1024 * 1024


class TestRequestBodies:
    async def test_body_over_the_cap_is_413(self, http: httpx.AsyncClient) -> None:
        big = {"manifest": "x" * (3 * MIB)}
        response = await http.post(RUNS, json=big, headers=APPROVER)
        assert response.status_code == 413
        assert error_code(response) == "payload_too_large"

    async def test_chunked_body_over_the_cap_is_413(self, http: httpx.AsyncClient) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"manifest": "'
            for _ in range(12):
                yield b"x" * (256 * 1024)
            yield b'"}'

        response = await http.post(
            SIMULATIONS, content=chunks(), headers={"Content-Type": "application/json", **READER}
        )
        assert "content-length" not in response.request.headers
        assert response.status_code == 413
        assert error_code(response) == "payload_too_large"

    async def test_body_under_the_cap_is_read(self, http: httpx.AsyncClient) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"manifest": '
            yield b'"kind: TaskPack", "inputs": {}}'

        response = await http.post(
            SIMULATIONS, content=chunks(), headers={"Content-Type": "application/json", **READER}
        )
        assert response.status_code == 400  # read whole, and found wanting as a manifest
        assert "errors" in response.json()

    async def test_malformed_json_is_400(self, http: httpx.AsyncClient) -> None:
        response = await http.post(
            SIMULATIONS,
            content=b'{"manifest": ',
            headers={"Content-Type": "application/json", **READER},
        )
        assert response.status_code == 400
        assert error_code(response) == "malformed_json"

    async def test_unknown_field_is_400(self, http: httpx.AsyncClient) -> None:
        response = await http.post(
            SIMULATIONS, json={"manifest": ECHO, "inputz": {}}, headers=READER
        )
        assert response.status_code == 400
        assert error_code(response) == "invalid_request"
        assert response.json()["error"]["message"] == "body.inputz: unknown field"

    async def test_wrong_type_names_the_field(self, http: httpx.AsyncClient) -> None:
        response = await http.post(
            SIMULATIONS, json={"manifest": ECHO, "inputs": [1]}, headers=READER
        )
        assert response.status_code == 400
        assert response.json()["error"]["message"].startswith("body.inputs:")


class TestLoneSurrogates:
    """`"\\ud800"` is valid JSON but not Unicode text: it cannot be hashed or stored."""

    LONE_VALUE = b'{"manifest": %s, "inputs": {"who": "x\\ud800y"}%s}'
    LONE_KEY = b'{"manifest": %s, "inputs": {"who": "x", "\\udc00": 1}%s}'

    async def post(self, http: httpx.AsyncClient, url: str, template: bytes) -> httpx.Response:
        run_id = b', "runId": "%s"' % unique("run").encode() if url == RUNS else b""
        body = template % (json.dumps(ECHO).encode(), run_id)
        return await http.post(
            url, content=body, headers={"Content-Type": "application/json", **APPROVER}
        )

    async def test_in_an_input_value_is_400(self, http: httpx.AsyncClient) -> None:
        for url in (SIMULATIONS, RUNS):
            response = await self.post(http, url, self.LONE_VALUE)
            assert response.status_code == 400, (url, response.text)
            assert error_code(response) == "malformed_json"
            assert "body.inputs.who" in response.json()["error"]["message"]

    async def test_in_an_input_key_is_400(self, http: httpx.AsyncClient) -> None:
        for url in (SIMULATIONS, RUNS):
            response = await self.post(http, url, self.LONE_KEY)
            assert response.status_code == 400, (url, response.text)
            assert error_code(response) == "malformed_json"
            assert "surrogate" in response.json()["error"]["message"]

    async def test_a_surrogate_pair_is_text(self, http: httpx.AsyncClient) -> None:
        # The escaped pair of U+1F600 is one character, and welcome.
        body = b'{"manifest": %s, "inputs": {"who": "\\ud83d\\ude00"}}' % json.dumps(ECHO).encode()
        response = await http.post(
            SIMULATIONS, content=body, headers={"Content-Type": "application/json", **READER}
        )
        assert response.status_code == 200, response.text


class TestHead:
    async def test_head_answers_like_get_without_a_body(self, http: httpx.AsyncClient) -> None:
        created = await create_run(http, ECHO, inputs={"who": "head"})
        for url in (RUNS, run_url(created["runId"]), "/healthz", "/openapi.json"):
            got = await http.get(url, headers=READER)
            head = await http.head(url, headers=READER)
            assert head.status_code == got.status_code == 200, url
            assert head.content == b""
            assert head.headers["content-type"] == got.headers["content-type"]

    async def test_head_of_a_followed_log_stream_returns(self, http: httpx.AsyncClient) -> None:
        created = await create_run(http, GATED)  # waits at its gate: a GET would stream on
        url = f"{run_url(created['runId'])}/logs"
        head = await asyncio.wait_for(
            http.head(url, params={"follow": "true"}, headers=READER), timeout=10
        )
        assert head.status_code == 200
        assert head.content == b""

    async def test_head_of_a_missing_run_is_404(self, http: httpx.AsyncClient) -> None:
        head = await http.head(run_url("no-such-run"), headers=READER)
        assert head.status_code == 404

    async def test_head_on_a_post_only_route_is_still_405(self, http: httpx.AsyncClient) -> None:
        head = await http.head(SIMULATIONS, headers=READER)
        assert head.status_code == 405


class TestRouting:
    async def test_unknown_path_is_404_envelope(self, http: httpx.AsyncClient) -> None:
        response = await http.get("/v1/task-runner/nothing-here")
        assert response.status_code == 404
        assert error_code(response) == "not_found"

    async def test_wrong_method_is_405_envelope(self, http: httpx.AsyncClient) -> None:
        response = await http.delete(RUNS, headers=APPROVER)
        assert response.status_code == 405
        assert error_code(response) == "method_not_allowed"

    async def test_trace_id_follows_traceparent(self, http: httpx.AsyncClient) -> None:
        trace = "4bf92f3577b34da6a3ce929d0e0e4736"
        response = await http.get(
            f"{RUNS}/no-such-run",
            headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01", **READER},
        )
        assert response.status_code == 404
        assert response.json()["error"]["traceId"] == trace
