"""What every endpoint does with a bad request: the error envelope, never a stack trace."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from tests.api.packs import ECHO
from tests.api.support import APPROVER, READER, RUNS, error_code

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
