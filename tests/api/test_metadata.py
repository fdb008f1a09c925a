"""GET /.well-known/openapi, the spec it points at, and the spec against the REST contract."""

from __future__ import annotations

import hashlib

import httpx

from tests.api.packs import contract

WELL_KNOWN = "/.well-known/openapi"
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
