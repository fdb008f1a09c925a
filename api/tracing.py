"""Trace ids: one per request, in every error body, log line and `X-Trace-Id` response header.

With OpenTelemetry on (workflows/contract/telemetry.py), it is the trace id of the request's
span, which honours the caller's W3C `traceparent`; the response carries the span's own
`traceparent` too. With it off, a caller's `traceparent` still gives the trace id, so a request
can be followed across services; otherwise the id is fresh.
"""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar

from opentelemetry import trace

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-(?P<trace>[0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_current: ContextVar[str] = ContextVar("trace_id", default="")


def new_trace_id(traceparent: str | None) -> str:
    match = _TRACEPARENT.match(traceparent.strip().lower()) if traceparent else None
    if match and match["trace"] != "0" * 32:
        return match["trace"]
    return secrets.token_hex(8)


def set_trace_id(trace_id: str) -> None:
    _current.set(trace_id)


def trace_id() -> str:
    """The current request's trace id (a fresh one outside a request)."""
    return _current.get() or secrets.token_hex(8)


def current_span_traceparent() -> str | None:
    """The W3C `traceparent` of the current OpenTelemetry span, or None when there is none
    (tracing off, or outside a request)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return (
        f"00-{trace.format_trace_id(context.trace_id)}-{trace.format_span_id(context.span_id)}"
        f"-{int(context.trace_flags):02x}"
    )


LINK_PATH = "/v1/task-runner/approvals/"


def redacted_path(path: str) -> str:
    """`path` fit for logs and spans: an approval link's token is its authority, so it is
    replaced by `{token}`, also where the link's path is mangled (a doubled slash, a proxy's
    prefix: no route then, but the token is as good): there, any segment after `/approvals/`
    that holds a dot, as a token does."""
    at = path.find(LINK_PATH)
    if at >= 0:
        return f"{path[:at]}{LINK_PATH}{{token}}"
    return _DOTTED_AFTER_APPROVALS.sub("/approvals/{token}", path)


_DOTTED_AFTER_APPROVALS = re.compile(r"/approvals/[^/]*\.[^/]*")
