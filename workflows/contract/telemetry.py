"""OpenTelemetry traces: one trace from a REST request through its workflow to every activity.

Off unless the operator asks, with the standard variables (nothing else to learn):
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) or `OTEL_TRACES_EXPORTER`
set turns tracing on; `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` keeps it off.
Everything else is the SDK's and the exporters' own reading of the environment:
`OTEL_TRACES_EXPORTER` (`otlp`, the default, and/or `console`),
`OTEL_EXPORTER_OTLP_PROTOCOL` / `..._TRACES_PROTOCOL` (`http/protobuf`, the default, or `grpc`),
the endpoint, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`.

The API instruments FastAPI (a server span per request, the caller's W3C `traceparent`
honoured) and both the API's and the worker's Temporal clients carry Temporal's
`TracingInterceptor`, which passes the context in workflow and activity headers: the request's
span is the parent of `StartWorkflow:PackRun`, then `RunWorkflow:PackRun`, then each
`StartActivity:…`/`RunActivity:…`.

One provider per process (the dev command runs the API and a worker in one), made on first use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from temporalio.contrib.opentelemetry import TracingInterceptor

DEFAULT_SERVICE = "taskrunner"
TRACER_NAME = "taskrunner"
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


class TelemetryConfigError(ValueError):
    """An OTEL_* variable asks for something this service cannot do."""


def enabled(environ: Mapping[str, str]) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters == "none":
        return False
    return bool(exporters) or any(environ.get(name, "").strip() for name in _ENDPOINTS)


def _exporters(environ: Mapping[str, str]) -> list[SpanExporter]:
    names = [n.strip() for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",")]
    out: list[SpanExporter] = []
    for name in filter(None, names):
        if name == "console":
            out.append(ConsoleSpanExporter())
        elif name == "otlp":
            out.append(_otlp(environ))
        elif name != "none":
            raise TelemetryConfigError(
                f"OTEL_TRACES_EXPORTER={name!r}: this service exports `otlp` or `console`"
            )
    return out


def _otlp(environ: Mapping[str, str]) -> SpanExporter:
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"  # the specification's default
    ).strip()
    # The exporters read their endpoint, headers, timeout, compression and certificates from
    # the same environment themselves.
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return GrpcSpanExporter()
    raise TelemetryConfigError(
        f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: use `http/protobuf` or `grpc`"
    )


def provider_from(environ: Mapping[str, str]) -> TracerProvider | None:
    """A tracer provider exporting as `environ` says, or None when tracing is off."""
    if not enabled(environ):
        return None
    resource = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE}))
    provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER
    for exporter in _exporters(environ):
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


@cache
def process_provider() -> TracerProvider | None:
    """This process's provider from its environment (None: tracing is off). Flushed at exit."""
    return provider_from(os.environ)


def interceptors(provider: TracerProvider | None) -> list[TracingInterceptor]:
    """The Temporal client interceptors of `provider` (a worker made from a client with them
    traces its workflows and activities too)."""
    if provider is None:
        return []
    return [TracingInterceptor(provider.get_tracer(TRACER_NAME))]
