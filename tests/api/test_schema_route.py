"""GET /schemas/taskpack.json: the manifest's JSON Schema, public, cacheable, the committed one."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from jsonschema import Draft202012Validator

from compiler.loader import load_yaml
from tests.api.packs import ECHO

ROOT = Path(__file__).resolve().parents[2]
URL = "/schemas/taskpack.json"


async def test_served_without_a_token_and_equal_to_the_committed_copy(
    http: httpx.AsyncClient,
) -> None:
    response = await http.get(URL)  # no token: the stack runs with auth on
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/schema+json")
    assert response.text == (ROOT / "schema" / "taskpack.schema.json").read_text()
    validator = Draft202012Validator(response.json())
    assert validator.is_valid(load_yaml(ECHO))
    assert not validator.is_valid({**load_yaml(ECHO), "kind": "Pack"})


async def test_etag_answers_304_and_head_is_allowed(http: httpx.AsyncClient) -> None:
    first = await http.get(URL)
    etag = first.headers["etag"]
    again = await http.get(URL, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    stale = await http.get(URL, headers={"If-None-Match": '"stale"'})
    assert stale.status_code == 200 and json.loads(stale.content) == first.json()
    head = await http.head(URL)
    assert head.status_code == 200 and head.content == b""


async def test_listed_in_the_served_openapi_document(http: httpx.AsyncClient) -> None:
    paths = (await http.get("/openapi.json")).json()["paths"]
    assert paths[URL]["get"]["operationId"] == "getTaskPackSchema"
