"""GET /.well-known/openapi, the spec it points at, and the spec against the REST contract."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import httpx

from api.app import create_app
from tests.api.packs import contract
from tests.api.support import READER

WELL_KNOWN = "/.well-known/openapi"
PREFIX = "/v1/task-runner"
METHODS = {"get", "post", "put", "patch", "delete"}


class TestGetOpenApiMetadata:
    async def test_metadata_with_etag_and_signature(self, http: httpx.AsyncClient) -> None:
        response = await http.get(WELL_KNOWN)  # no token needed
        assert response.status_code == 200
        meta = response.json()
        assert set(meta) == {"specUrl", "version", "buildVersion", "etag", "signature"}
        assert meta["version"] == contract()["info"]["version"]
        assert response.headers["etag"] == meta["etag"]
        assert response.headers["x-signature"] == meta["signature"]

        spec = await http.get(meta["specUrl"])
        assert spec.status_code == 200
        assert meta["signature"] == "sha256:" + hashlib.sha256(spec.content).hexdigest()

    async def test_if_none_match_is_304(self, http: httpx.AsyncClient) -> None:
        etag = (await http.get(WELL_KNOWN)).headers["etag"]
        for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            response = await http.get(WELL_KNOWN, headers={"If-None-Match": header})
            assert response.status_code == 304, header
            assert response.headers["etag"] == etag
            assert response.content == b""
        changed = await http.get(WELL_KNOWN, headers={"If-None-Match": '"stale"'})
        assert changed.status_code == 200


class TestSpecFollowsTheContract:
    async def test_every_contract_operation_is_served_with_its_operation_id(
        self, http: httpx.AsyncClient
    ) -> None:
        ours = (await http.get((await http.get(WELL_KNOWN)).json()["specUrl"])).json()["paths"]
        wanted = {
            (path, method): operation["operationId"]
            for path, operations in contract()["paths"].items()
            for method, operation in operations.items()
            if method in METHODS
        }
        assert len(wanted) == 8  # a sanity check that the contract was read
        served = {
            (path, method): operation.get("operationId")
            for path, operations in ours.items()
            for method, operation in operations.items()
        }
        missing = {key: op for key, op in wanted.items() if served.get(key) != op}
        assert not missing, f"contract operations not served as specified: {missing}"

    async def test_contract_tenant_header_and_status_codes_are_documented(
        self, http: httpx.AsyncClient
    ) -> None:
        ours = (await http.get("/openapi.json")).json()["paths"]
        for path, operations in contract()["paths"].items():
            for method, operation in operations.items():
                if method not in METHODS:
                    continue
                served = ours[path][method]
                names = {p["name"] for p in served.get("parameters", [])}
                uses_tenant = any(
                    p.get("$ref", "").endswith("/Tenant") for p in operation.get("parameters", [])
                )
                assert not uses_tenant or "X-StellaOps-Tenant" in names, (path, method)
                missing = set(operation["responses"]) - set(served["responses"])
                assert not missing, f"{method.upper()} {path} does not document {missing}"

    async def test_no_422_is_documented_and_a_bad_parameter_is_400(
        self, http: httpx.AsyncClient
    ) -> None:
        document = (await http.get("/openapi.json")).json()
        documented_422 = [
            (method.upper(), path)
            for path, operations in document["paths"].items()
            for method, operation in operations.items()
            if "422" in operation["responses"]
        ]
        assert not documented_422, f"the service never answers 422: {documented_422}"
        schemas = document["components"]["schemas"]
        assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
        # Every reference still resolves.
        refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(document)))
        assert refs and refs <= set(schemas), refs - set(schemas)
        # What a bad parameter really gets: 400 with the error envelope.
        response = await http.get(f"{PREFIX}/runs", params={"pageSize": "many"}, headers=READER)
        assert response.status_code == 400, response.text
        assert set(response.json()["error"]) >= {"code", "message"}

    async def test_security_scheme_and_default_security_are_the_contracts(
        self, http: httpx.AsyncClient
    ) -> None:
        document = (await http.get("/openapi.json")).json()
        assert (
            document["components"]["securitySchemes"] == contract()["components"]["securitySchemes"]
        )
        assert document["security"] == contract()["security"]

    def test_the_token_url_is_the_operators(self, api_settings: Any) -> None:
        url = "https://idp.example.org/oauth2/token"
        app = create_app(api_settings.model_copy(update={"oauth_token_url": url}))
        flows = app.openapi()["components"]["securitySchemes"]["oauth2"]["flows"]
        assert flows["clientCredentials"]["tokenUrl"] == url

    async def test_openapi_metadata_is_the_contracts_schema(self, http: httpx.AsyncClient) -> None:
        document = (await http.get("/openapi.json")).json()
        wanted = contract()["components"]["schemas"]["OpenApiMetadata"]
        served = document["components"]["schemas"]["OpenApiMetadata"]
        assert set(served["required"]) == set(wanted["required"])
        assert set(served["properties"]) == set(wanted["properties"])
        response = document["paths"][WELL_KNOWN]["get"]["responses"]["200"]
        assert response["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/OpenApiMetadata"
        }

    async def test_timestamps_are_date_time(self, http: httpx.AsyncClient) -> None:
        document = (await http.get("/openapi.json")).json()
        schemas = document["components"]["schemas"]
        listing = document["paths"][f"{PREFIX}/runs"]["get"]["parameters"]
        times = {p["name"]: _formats(p["schema"]) for p in listing if "created" in p["name"]}
        assert times == {"createdAfter": {"date-time"}, "createdBefore": {"date-time"}}
        wanted = [
            (name, field)
            for name, schema in contract()["components"]["schemas"].items()
            for field, spec in schema.get("properties", {}).items()
            if spec.get("format") == "date-time"
        ]
        assert len(wanted) == 6  # a sanity check that the contract was read
        # And every time field of the service's own schemas.
        wanted += [
            (name, field)
            for name, schema in schemas.items()
            for field in schema.get("properties", {})
            if field.endswith("At") or field == "timestamp"
        ]
        untyped = [
            (name, field)
            for name, field in wanted
            if "date-time" not in _formats(schemas[name]["properties"][field])
        ]
        assert not untyped, f"timestamps without format: date-time: {untyped}"


def _formats(spec: dict[str, Any]) -> set[str]:
    """The formats a property's schema allows (an optional one is an anyOf with null)."""
    options = spec.get("anyOf", [spec])
    return {option["format"] for option in options if "format" in option}
