"""Prometheus metrics of one API process, served at `/metrics`.

Each app has its own registry (two apps in one process, as in the tests, never share counters).
Runs finishing are counted as this process observes them (a `state` read that finds a run ended
for the first time), so the counter is a lower bound across replicas; Temporal's own metrics are
the authority on workflow completions.

Tenant names are not in the metrics unless the operator opts in (`metrics_tenant_labels`,
TASKRUNNER_METRICS_TENANT_LABELS=true): a tenant's name can itself be confidential (a customer),
and `/metrics` is scraped by whoever runs Prometheus. With the opt-in and auth on, `/metrics`
asks for a token (see `api/routes/health.py`).
"""

from __future__ import annotations

from collections import OrderedDict

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from workflows.contract.state import TERMINAL_RUN_STATUSES

# From a minute (a person at the desk) to a week (a gate left over the weekend and then some).
APPROVAL_WAIT_BUCKETS = (10, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400, 7 * 86400)

# How many finished runs to remember so that reading one twice does not count it twice.
_SEEN_LIMIT = 10_000

__all__ = ["CONTENT_TYPE", "Metrics"]


class Metrics:
    def __init__(self, *, tenant_labels: bool = False) -> None:
        self.registry = CollectorRegistry()
        self.tenant_labels = tenant_labels
        self.runs_started = Counter(
            "taskrunner_runs_started",
            "Runs started through the API" + (", by tenant." if tenant_labels else "."),
            ["tenant"] if tenant_labels else [],
            registry=self.registry,
        )
        self.runs_finished = Counter(
            "taskrunner_runs_finished",
            "Runs this API process observed finished, by status.",
            ["status"],
            registry=self.registry,
        )
        self.approvals_decided = Counter(
            "taskrunner_approvals_decided",
            "Approval decisions applied through the API, by decision.",
            ["decision"],
            registry=self.registry,
        )
        self.runs_in_flight = Gauge(
            "taskrunner_runs_in_flight",
            "Runs on this API's task queue whose workflow is open, by status, across tenants "
            "(Temporal's visibility store, counted at each scrape).",
            ["status"],
            registry=self.registry,
        )
        self.approval_wait_seconds = Histogram(
            "taskrunner_approval_wait_seconds",
            "How long a gate had waited when a decision on it was applied through this API "
            "(REST or a signed link), by decision.",
            ["decision"],
            buckets=APPROVAL_WAIT_BUCKETS,
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "taskrunner_http_request_duration_seconds",
            "HTTP request latency, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self._seen: OrderedDict[str, None] = OrderedDict()

    def run_started(self, tenant: str) -> None:
        if self.tenant_labels:
            self.runs_started.labels(tenant=tenant).inc()
        else:
            self.runs_started.inc()

    def observe_run(self, workflow_id: str, status: str) -> None:
        """Count a run as finished the first time it is seen in a terminal status."""
        if status not in TERMINAL_RUN_STATUSES or workflow_id in self._seen:
            return
        self._seen[workflow_id] = None
        if len(self._seen) > _SEEN_LIMIT:
            self._seen.popitem(last=False)
        self.runs_finished.labels(status=status).inc()

    def in_flight(self, counts: dict[str, int] | None) -> None:
        """The scrape's counts of open runs; None (Temporal did not answer) drops the series
        rather than repeating stale ones."""
        self.runs_in_flight.clear()
        for status, count in (counts or {}).items():
            self.runs_in_flight.labels(status=status).set(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)
