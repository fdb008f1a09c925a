"""Schemathesis against the API's own OpenAPI document, over HTTP to the live test server: for
every operation, generated requests (valid by the schema, then invalid ones) get no 5xx, only
documented status codes and content types, and bodies and headers that match the document.

Bounded and repeatable: a fixed number of examples per operation, derandomized. Operations on
a run get random run ids, so mostly 404s: what a run with real state does is the other tests'
business. The requests run in a thread, so the session's event loop (and the worker on it)
goes on answering the API's queries meanwhile. Schemathesis's OpenAPI modules are imported here,
at collection, not first in that thread: pytest rewrites (parses) them on import, and CPython
3.11.7's parser raised "AST constructor recursion depth mismatch" doing it in the thread.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import httpx
import requests
import schemathesis
import schemathesis.specs.openapi.schemas  # imported at collection: see the docstring
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import checks
from schemathesis.core.failures import FailureGroup

from tests.api.support import bearer, in_tenant

EXAMPLES = int(os.environ.get("TASKRUNNER_SCHEMATHESIS_EXAMPLES", "25"))
HEADERS = bearer("taskrunner.admin", grants=["packs.approve"])

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]
# Webhooks are registered in a tenant no run lives in, so nothing is ever delivered to the
# random URLs generated for them, and they are deleted afterwards.
HOOK_TENANT = "fuzz-webhooks"
# The webhook operations run as an admin of HOOK_TENANT, with a token issued for it.
HOOK_HEADERS = in_tenant(HOOK_TENANT, "taskrunner.admin", grants=["packs.approve"])
MODES = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
# Streaming a followed log waits for the run to end; a random run id is a 404 anyway.
SKIP_QUERY = {"streamRunLogs": {"follow": False}}


def check_operation(
    operation: Any,
    mode: schemathesis.GenerationMode,
    base_url: str,
    session: requests.Session,
    headers: dict[str, str],
) -> list[str]:
    """Failures of one operation in one generation mode, one line each."""
    operation_id = operation.definition.raw.get("operationId", "")
    strategy = operation.as_strategy(generation_mode=mode, query=SKIP_QUERY.get(operation_id))

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def call(case: schemathesis.Case) -> None:
        response = case.call(base_url=base_url, session=session, headers=headers, timeout=30)
        case.validate_response(response, checks=CHECKS)

    where = f"{operation.label} [{mode.value}]"
    try:
        call()
    except Unsatisfiable:
        return []  # nothing of this operation can be made invalid (no parameters, no body)
    except FailureGroup as group:
        return [f"{where}: {f.title}: {f.message[:300]}" for f in group.exceptions]
    except AssertionError as exc:
        return [f"{where}: {str(exc)[:400]}"]
    return []


def fuzz(document: dict[str, Any], base_url: str) -> list[str]:
    """Every operation, in both generation modes; the failures found."""
    schema = schemathesis.openapi.from_dict(document)
    found: list[str] = []
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            headers = HEADERS
            if "/webhooks" in operation.path:
                headers = HOOK_HEADERS
            for mode in MODES:
                found += check_operation(operation, mode, base_url, session, headers)
    return found


async def test_no_server_errors_and_no_schema_violations(http: httpx.AsyncClient) -> None:
    document = (await http.get("/openapi.json")).json()
    failures = await asyncio.to_thread(fuzz, document, str(http.base_url).rstrip("/"))
    hooks = HOOK_HEADERS
    for hook in (await http.get("/v1/task-runner/webhooks", headers=hooks)).json()["webhooks"]:
        await http.delete(f"/v1/task-runner/webhooks/{hook['id']}", headers=hooks)
    assert not failures, "\n".join(failures)
