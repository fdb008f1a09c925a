"""Pure ASGI middlewares (no BaseHTTPMiddleware: it buffers streamed responses).

`RequestContext`, outermost of ours: a trace id per request (in logs, error bodies and
`X-Trace-Id`; with OpenTelemetry on, the request span's trace id, and its `traceparent` returned),
the latency histogram, one access-log line, and the last resort for anything a route raised that
no exception handler claimed: a 500 `internal_error` envelope, logged with the trace id.

`BodyLimit`: request bodies larger than the cap are refused with 413 before any route reads
them, whether the size is announced (`Content-Length`) or not (chunked).

`JsonBody`: a JSON body that repeats a key in any object, or holds a lone UTF-16 surrogate
(`"\\ud800"`, valid JSON but no Unicode text), is a 400 `malformed_json`.
It is also where the body is parsed for what the API reads before the route does (the tenant a
POST /runs names): the parsed document is kept in the request's state as `PARSED_BODY`.

`HeadAsGet`, innermost: `HEAD` on a `GET` route answers as the `GET` would, without the body
(FastAPI routes answer only the methods they declare, and HTTP says HEAD goes with GET).
"""

from __future__ import annotations

import json
import time
from collections.abc import MutableMapping
from typing import Any

import structlog
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import errors
from api.metrics import Metrics
from api.tracing import current_span_traceparent, new_trace_id, redacted_path, set_trace_id

log = structlog.get_logger("taskrunner.api")

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods named in the latency histogram; any other is `other`: a caller may send any token as
a method, and each would otherwise be a new series (unbounded, by anyone, with no token)."""

# The key, in the request's state (`request.state`), of the JSON body as JsonBody parsed it.
PARSED_BODY = "parsed_json_body"


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # With OpenTelemetry on, its middleware (outside this one) has opened the request's span
        # already, from the caller's traceparent if any: its trace id is the request's.
        traceparent = current_span_traceparent()
        trace = (
            traceparent.split("-")[1]
            if traceparent
            else new_trace_id(Headers(scope=scope).get("traceparent"))
        )
        set_trace_id(trace)
        extra = [(b"x-trace-id", trace.encode())]
        if traceparent:
            extra.append((b"traceparent", traceparent.encode()))
        structlog.contextvars.bind_contextvars(trace_id=trace)
        status = 500
        started = False

        async def send_with_trace(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        began = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_trace)
        except Exception:
            log.exception(
                "http.unhandled", method=scope["method"], path=redacted_path(scope["path"])
            )
            if not started:
                await errors.internal_error_response()(scope, receive, send_with_trace)
        finally:
            elapsed = time.perf_counter() - began
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.metrics.request_seconds.labels(
                method=method, route=route, status=str(status)
            ).observe(elapsed)
            log.info(
                "http.request",
                method=scope["method"],
                path=redacted_path(scope["path"]),
                status=status,
                ms=round(elapsed * 1000, 1),
            )
            structlog.contextvars.unbind_contextvars("trace_id")


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = errors.PayloadTooLarge(f"request body is larger than {self.max_bytes} bytes")
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await errors.error_response(too_large)(scope, receive, send)
            return
        # Read the whole body first (it is at most max_bytes), then hand it to the app in one
        # piece; later receive() calls go to the server so a disconnect is still seen.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left mid-body
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await errors.error_response(too_large)(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> MutableMapping[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class DuplicateKey(ValueError):
    pass


def lone_surrogate_at(value: Any, path: str = "body") -> str | None:
    """The path of the first string (value or key) in `value` that holds a lone UTF-16
    surrogate, or None. JSON may escape one (`"\\udc00"`), but it is no Unicode text: it can
    be neither hashed as UTF-8 nor stored, so it is refused at the door."""
    if isinstance(value, str):
        return path if _has_surrogate(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if _has_surrogate(key):
                return f"{path} (a key)"
            found = lone_surrogate_at(item, f"{path}.{key}")
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = lone_surrogate_at(item, f"{path}[{index}]")
            if found:
                return found
    return None


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateKey(key)
        seen[key] = value
    return seen


def _is_json(content_type: str | None) -> bool:
    """Whether FastAPI would parse a body of this type as JSON (it does when there is none)."""
    if not content_type:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class JsonBody:
    """Refuses a JSON body in which an object repeats a key, before any route parses it.

    Parsers disagree on which of two equal keys wins (Python's keeps the last, others the first
    or refuse), so a body could mean one thing to a proxy, an audit log or a signature check and
    another to us. Bodies that are not valid JSON pass on: the route reports those itself.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_json(Headers(scope=scope).get("content-type")):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:  # one message when BodyLimit (outside this) has read the body already
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body:
            problem: errors.MalformedJson | None = None
            try:
                parsed = json.loads(body, object_pairs_hook=_no_duplicates)
                scope.setdefault("state", {})[PARSED_BODY] = parsed
            except DuplicateKey as exc:
                problem = errors.MalformedJson(
                    f"malformed JSON body: duplicate key {exc.args[0]!r}"
                )
            except (ValueError, RecursionError):
                pass  # not JSON (or too deep to read): the route answers that
            else:
                where = lone_surrogate_at(parsed)
                if where is not None:
                    problem = errors.MalformedJson(
                        f"malformed JSON body: {where} holds a lone UTF-16 surrogate "
                        "(a \\uD800-\\uDFFF escape without its pair), which is not Unicode text"
                    )
            if problem is not None:
                await errors.error_response(problem)(scope, receive, send)
                return
        replayed = False

        async def replay() -> MutableMapping[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class _HeadDone(Exception):
    """Raised into the app once a HEAD response's headers are out: the body is not wanted."""


class HeadAsGet:
    """Serves `HEAD` as `GET` and sends the headers only. A streamed body (a log stream) is
    stopped after its first chunk, so a HEAD never holds a connection open."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.start":
                await send(message)
            elif message["type"] == "http.response.body":
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                raise _HeadDone

        try:
            await self.app({**scope, "method": "GET"}, receive, headers_only)
        except _HeadDone:
            pass
        except BaseExceptionGroup as group:  # a streamed response sends from a task group
            rest = group.subgroup(lambda exc: not isinstance(exc, _HeadDone | BaseExceptionGroup))
            if rest is not None:
                raise rest from None
