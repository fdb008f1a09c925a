"""GET /runs/{runId}/artifacts (list) and GET /runs/{runId}/artifacts/{name} (download a file)."""

from __future__ import annotations

import json

import httpx

from tests.api.packs import ECHO, FILES
from tests.api.support import READER, create_run, error_code, run_url, status_is, wait_for_run


class TestListRunArtifacts:
    async def test_file_and_object_outputs(self, http: httpx.AsyncClient) -> None:
        created = await create_run(http, FILES)
        run_id = created["runId"]
        await wait_for_run(http, run_id, status_is("succeeded"))
        response = await http.get(f"{run_url(run_id)}/artifacts", headers=READER)
        assert response.status_code == 200
        artifacts = {a["name"]: a for a in response.json()}
        report = artifacts["report"]
        assert (report["type"], report["status"]) == ("file", "captured")
        assert report["sourcePath"] == "out/report.txt"
        assert report["storedPath"].endswith(f"{run_id}/artifacts/report")
        facts = artifacts["facts"]
        assert (facts["type"], facts["status"]) == ("object", "captured")
        assert json.loads(facts["expressionJson"]) == {"answer": 42}

    async def test_no_outputs_is_an_empty_list(self, http: httpx.AsyncClient) -> None:
        created = await create_run(http, ECHO, inputs={"who": "x"})
        await wait_for_run(http, created["runId"], status_is("succeeded"))
        response = await http.get(f"{run_url(created['runId'])}/artifacts", headers=READER)
        assert response.status_code == 200
        assert [a for a in response.json() if a["type"] == "file"] == []

    async def test_unknown_run_is_404(self, http: httpx.AsyncClient) -> None:
        response = await http.get(f"{run_url('no-such-run')}/artifacts", headers=READER)
        assert response.status_code == 404
        assert error_code(response) == "run_not_found"


class TestDownloadRunArtifact:
    async def test_download_a_captured_file(self, http: httpx.AsyncClient) -> None:
        created = await create_run(http, FILES)
        run_id = created["runId"]
        await wait_for_run(http, run_id, status_is("succeeded"))
        response = await http.get(f"{run_url(run_id)}/artifacts/report", headers=READER)
        assert response.status_code == 200
        assert response.content == b"report body"
        assert response.headers["content-type"] == "application/octet-stream"
        assert 'filename="report"' in response.headers["content-disposition"]

        # Not a file, not captured, or not a name of this run: 404, and nothing outside is read.
        for name in ("facts", "missing.txt", "..%2F..%2F..%2Fetc%2Fpasswd", "%2E%2E"):
            response = await http.get(f"{run_url(run_id)}/artifacts/{name}", headers=READER)
            assert response.status_code == 404, name
            assert response.json()["error"]["code"] in {"artifact_not_found", "not_found"}
