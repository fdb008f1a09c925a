"""The served OpenAPI document: FastAPI's, made to say what the service does.

- Security is the contract's `oauth2` scheme (client credentials, the roles as scopes), with the
  operator's token URL. FastAPI writes on each operation the scope its role dependency enforces
  (`api.deps._role`, one value for both); here that becomes one security requirement per role
  holding the scope, lowest first, since any one of them is enough (the contract's top-level
  `security` lists all three the same way). A route that takes no token says `security: []`.
- No 422: FastAPI documents one for every route with parameters, but the service answers a
  request it cannot read with a 400 and the error envelope (`api.errors`).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from api.auth import ADMIN, METRICS, ROLES, roles_satisfying
from api.deps import OAUTH2
from api.settings import ApiSettings

# FastAPI's schemas for its 422 body, which the service never sends.
_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def install(app: FastAPI, settings: ApiSettings) -> None:
    """Serve the document below at `app.openapi_url` (and hash it in /.well-known/openapi)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = tell_the_truth(generate(), settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def security_for(scopes: list[str] | None) -> list[dict[str, list[str]]]:
    """An operation's `security`, given the scopes FastAPI found on it (None: it takes no
    token; []: any valid token). Several scopes all apply: the highest decides."""
    if scopes is None:
        return []
    if not scopes:
        return [{OAUTH2: []}]
    highest = max(scopes, key=ROLES.index)
    return [{OAUTH2: [role]} for role in roles_satisfying(highest)]


def tell_the_truth(document: dict[str, Any], settings: ApiSettings) -> dict[str, Any]:
    components = document.setdefault("components", {})
    flow = components["securitySchemes"][OAUTH2]["flows"]["clientCredentials"]
    flow["tokenUrl"] = settings.oauth_token_url
    document["security"] = security_for([ROLES[0]])
    if not settings.auth_enabled:
        document["info"]["description"] += (
            "\n**Auth is off on this server** (TASKRUNNER_AUTH_ENABLED=false): every caller "
            "acts as an admin, and no token is needed.\n"
        )
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if method not in _METHODS:
                continue
            found = operation.get("security")
            scopes = None if found is None else [s for r in found for s in r.get(OAUTH2, [])]
            operation["security"] = security_for(scopes)
            operation["responses"].pop("422", None)
            if path == "/metrics" and settings.metrics_tenant_labels and settings.auth_enabled:
                # /metrics checks its token itself: labelled by tenant, it names every tenant.
                flow["scopes"][METRICS] = "Read /metrics labelled by tenant (a scraper's scope)"
                operation["security"] = [{OAUTH2: [METRICS]}, {OAUTH2: [ADMIN]}]
    schemas = components.get("schemas", {})
    for name in _VALIDATION_SCHEMAS:
        schemas.pop(name, None)
    return document
