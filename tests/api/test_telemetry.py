"""OpenTelemetry: one trace from the REST request through the workflow to each activity, the
caller's traceparent honoured and the span's returned, the error envelope's traceId the trace's;
off when the OTEL_* variables are unset, exported over OTLP when they are set."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from cli.catalog import installed_executors
from tests.api.conftest import Stack
from tests.api.packs import ECHO
from tests.api.support import READER, REQUESTER, RUNS, run_url, serve, status_is, wait_for_run
from tests.api.test_links import LINKS, link, waiting_run
from tests.helpers import unique, worker_for
from tests.otlp import Collector
from workflows.contract import telemetry


def requests(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    """The HTTP server spans (Temporal's RunWorkflow spans are of the server kind too)."""
    return [s for s in spans if s.kind == SpanKind.SERVER and s.name.startswith(("GET ", "POST "))]


@dataclass
class Traced:
    url: str
    spans: InMemorySpanExporter

    def of_trace(self, trace_id: str) -> list[ReadableSpan]:
        return [
            s
            for s in self.spans.get_finished_spans()
            if s.context is not None and format_trace_id(s.context.trace_id) == trace_id
        ]

    async def requests_of(self, trace_id: str) -> list[ReadableSpan]:
        """The trace's HTTP server spans, once there are any (a span ends just after its
        response is sent, so it may not be finished when the answer arrives)."""
        await self.wait_for(trace_id, ("GET ", "POST "))
        return requests(self.of_trace(trace_id))

    async def wait_for(
        self, trace_id: str, prefix: str | tuple[str, ...], timeout: float = 30
    ) -> None:
        deadline = time.monotonic() + timeout
        while not any(s.name.startswith(prefix) for s in self.of_trace(trace_id)):
            if time.monotonic() > deadline:
                names = sorted(s.name for s in self.of_trace(trace_id))
                raise AssertionError(f"no {prefix} span in trace {trace_id}: {names}")
            await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
async def traced(dev_env: WorkflowEnvironment, stack: Stack) -> AsyncIterator[Traced]:
    """An API and a worker (its own task queue) whose spans go to an in-memory exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = stack.settings.model_copy(update={"task_queue": unique("otel-tq")})
    async with worker_for(
        dev_env.client,
        settings.data_dir,
        settings.task_queue,
        settings=settings,
        interceptors=telemetry.interceptors(provider),
    ):
        app = create_app(settings, executors=installed_executors(), tracer_provider=provider)
        with serve(app) as url:
            yield Traced(url, exporter)
    provider.shutdown()


async def test_one_trace_from_the_request_to_each_activity(traced: Traced) -> None:
    async with httpx.AsyncClient(base_url=traced.url, timeout=30) as http:
        body = {"manifest": ECHO, "inputs": {"who": "otel"}, "runId": unique("run")}
        created = await http.post(RUNS, json=body, headers=REQUESTER)
        assert created.status_code == 201, created.text
        trace_id = created.headers["x-trace-id"]
        assert len(trace_id) == 32
        version, returned_trace, span_id, _ = created.headers["traceparent"].split("-")
        assert (version, returned_trace) == ("00", trace_id)
        await wait_for_run(http, body["runId"], status_is("succeeded"))
    await traced.wait_for(trace_id, "RunActivity:")
    spans = traced.of_trace(trace_id)
    names = {s.name for s in spans}
    server = requests(spans)
    assert [s.name for s in server] == ["POST /v1/task-runner/runs"], names
    assert server[0].context is not None
    assert format_span_id(server[0].context.span_id) == span_id  # the traceparent returned
    assert any(n.startswith("StartWorkflow:") for n in names), names
    assert any(n.startswith("RunWorkflow:") for n in names), names
    activities = [n for n in names if n.startswith("RunActivity:")]
    assert activities, names
    # Every span of the run hangs off the request's: one tree, rooted at the server span.
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    for span in spans:
        node = span
        while node.parent is not None and node.parent.span_id in by_id:
            node = by_id[node.parent.span_id]
        assert node is server[0], f"{span.name} is not under the request's span"


async def test_the_callers_traceparent_is_honoured(traced: Traced) -> None:
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    headers = {**READER, "traceparent": f"00-{caller_trace}-{caller_span}-01"}
    async with httpx.AsyncClient(base_url=traced.url, timeout=30) as http:
        missing = await http.get(run_url(unique("no-such-run")), headers=headers)
    assert missing.status_code == 404
    # The error envelope's traceId is the trace's, the caller's.
    assert missing.json()["error"]["traceId"] == caller_trace
    assert missing.headers["x-trace-id"] == caller_trace
    _, returned_trace, returned_span, _ = missing.headers["traceparent"].split("-")
    assert returned_trace == caller_trace and returned_span != caller_span
    server = await traced.requests_of(caller_trace)
    assert len(server) == 1 and server[0].parent is not None
    assert format_span_id(server[0].parent.span_id) == caller_span
    assert server[0].context is not None
    assert format_span_id(server[0].context.span_id) == returned_span


async def test_an_error_without_a_caller_trace_carries_the_spans(traced: Traced) -> None:
    async with httpx.AsyncClient(base_url=traced.url, timeout=30) as http:
        missing = await http.get(run_url(unique("no-such-run")), headers=READER)
    trace_id = missing.json()["error"]["traceId"]
    server = await traced.requests_of(trace_id)
    assert [s.name for s in server] == ["GET /v1/task-runner/runs/{runId}"]


async def test_link_tokens_stay_out_of_the_spans(traced: Traced) -> None:
    token, other = "eyJsaW5rIjoidGhpcyJ9.c2lnbmF0dXJlLW9uZQ", "eyJvdGhlciI6MX0.c2lnbmF0dXJlLXR3bw"
    async with httpx.AsyncClient(base_url=traced.url, timeout=30) as http:
        page = await http.get(f"/v1/task-runner/approvals/{token}", params={"other": other})
        posted = await http.post(f"/v1/task-runner/approvals/{token}")
    assert (page.status_code, posted.status_code) == (401, 401)  # not signed by this service
    for response in (page, posted):
        [server] = await traced.requests_of(response.headers["x-trace-id"])
        shown = f"{server.name} {dict(server.attributes or {})}"
        assert "/approvals/{token}" in shown
        assert token not in shown and other not in shown, shown


async def test_off_when_the_variables_are_unset(http: httpx.AsyncClient) -> None:
    # The shared test stack: no OTEL_* variables, so no spans and no traceparent; the trace id
    # is still there for logs and errors.
    assert telemetry.provider_from({}) is None
    missing = await http.get(run_url(unique("no-such-run")), headers=READER)
    assert "traceparent" not in missing.headers
    assert missing.json()["error"]["traceId"] == missing.headers["x-trace-id"]


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    try:
        yield c
    finally:
        c.close()


class TestConfiguredByTheStandardVariables:
    def test_which_variables_turn_it_on(self) -> None:
        endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
        assert telemetry.provider_from({}) is None
        assert telemetry.provider_from({"OTEL_TRACES_EXPORTER": "none", **endpoint}) is None
        assert telemetry.provider_from({"OTEL_SDK_DISABLED": "true", **endpoint}) is None
        for environ in (
            endpoint,
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/v1/traces"},
            {"OTEL_TRACES_EXPORTER": "console"},
            {**endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
        ):
            provider = telemetry.provider_from(environ)
            assert provider is not None, environ
            provider.shutdown()
        for bad in (
            {**endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            {"OTEL_TRACES_EXPORTER": "jaeger"},
        ):
            with pytest.raises(telemetry.TelemetryConfigError):
                telemetry.provider_from(bad)

    def test_spans_reach_an_otlp_endpoint(
        self, collector: Collector, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # The exporter reads the endpoint and the service name from the environment itself.
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "taskrunner-test")
        import os

        provider = telemetry.provider_from(os.environ)
        assert provider is not None
        with provider.get_tracer("t").start_as_current_span("exported"):
            pass
        provider.shutdown()  # flushes the batch
        assert collector.paths == ["/v1/traces"]
        assert collector.spans == [("taskrunner-test", "exported")]


def _everything(span: ReadableSpan) -> str:
    """All a span tells the trace backend: its name, attributes, events and links."""
    events = [(e.name, dict(e.attributes or {})) for e in span.events]
    links = [dict(link.attributes or {}) for link in span.links]
    return f"{span.name} {dict(span.attributes or {})} {events} {links} {span.status}"


async def test_a_used_link_leaves_its_token_in_no_span(traced: Traced) -> None:
    """A link that decides reaches Temporal (the update's spans, the workflow's, the webhook
    activity's): its token is in none of the trace's spans, the page's GET and the form's POST
    alike."""
    async with httpx.AsyncClient(base_url=traced.url, timeout=30) as http:
        state = await waiting_run(http)
        approve, reject = (
            link(state, "approved", nonce="n-otel"),
            link(state, "rejected", nonce="n-otel"),
        )
        page = await http.get(f"{LINKS}/{approve}", params={"other": reject})
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        posted = await http.post(f"{LINKS}/{approve}", headers=form)
        assert (page.status_code, posted.status_code) == (200, 200), posted.text
        await wait_for_run(http, state["runId"], status_is("succeeded"))
    for response in (page, posted):
        await traced.requests_of(response.headers["x-trace-id"])
    await asyncio.sleep(1)  # the update's and the workflow's spans end after the answer
    spans = traced.of_trace(page.headers["x-trace-id"]) + traced.of_trace(
        posted.headers["x-trace-id"]
    )
    assert len(spans) > 2, [s.name for s in spans]
    for span in spans:
        told = _everything(span)
        assert approve not in told and reject not in told, told
        for part in (*approve.split("."), *reject.split(".")):
            assert part not in told, told


@pytest.mark.parametrize(
    "traceparent",
    [
        "garbage",
        "00-" + "0" * 32 + "-" + "0" * 16 + "-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00-" + "a" * 5000,
        "\u00e9t\u00e9".encode("latin-1"),
    ],
)
async def test_a_malformed_traceparent_breaks_nothing(
    traced: Traced, traceparent: str | bytes
) -> None:
    headers: dict[str, str | bytes] = {
        **READER,
        "traceparent": traceparent,
        "tracestate": "=,=;" * 100,
    }
    async with httpx.AsyncClient(base_url=traced.url, timeout=30) as http:
        missing = await http.get(run_url(unique("no-such-run")), headers=headers)
    assert missing.status_code == 404, missing.text
    trace_id = missing.json()["error"]["traceId"]
    assert trace_id == missing.headers["x-trace-id"]
    assert len(trace_id) == 32 and int(trace_id, 16) != 0
