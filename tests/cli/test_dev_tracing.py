"""`taskrunner dev` with the standard OTEL_* variables set: a run's trace, from the REST request
through its workflow to its activities, reaches an OTLP endpoint from the real processes."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx

from tests.cli.test_dev_service import (
    BANNER,
    PORT_FLAGS,
    START_TIMEOUT,
    clean_env,
    dev_args,
    free_ports,
)
from tests.otlp import Collector
from tests.processes import processes_with

ECHO = """
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: traced-echo, version: 1.0.0}
spec:
  steps:
    - {id: hello, run: {uses: "builtin:echo", with: {greeting: hi}}}
"""


def test_a_runs_trace_reaches_the_otlp_endpoint(tmp_path: Path) -> None:
    collector = Collector()
    ports = free_ports(len(PORT_FLAGS))
    data_dir = tmp_path / "var"
    out_path = tmp_path / "dev.out"
    env = {
        **clean_env(),
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "OTEL_SERVICE_NAME": "taskrunner-dev-test",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export each batch within 0.1 s
    }
    with out_path.open("wb") as out:
        process = subprocess.Popen(
            dev_args(data_dir, ports),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while BANNER not in out_path.read_text(errors="replace"):
            assert process.poll() is None, out_path.read_text()
            assert time.monotonic() < deadline, out_path.read_text()
            time.sleep(0.2)
        api = f"http://127.0.0.1:{ports[PORT_FLAGS.index('--api-port')]}/v1/task-runner"
        created = httpx.post(f"{api}/runs", json={"manifest": ECHO}, timeout=30)
        assert created.status_code == 201, created.text
        trace_id = created.headers["x-trace-id"]
        assert created.headers["traceparent"].split("-")[1] == trace_id
        deadline = time.monotonic() + 60
        while not any(n.startswith("RunActivity:") for n in collector.traces.get(trace_id, [])):
            assert time.monotonic() < deadline, (collector.traces, out_path.read_text())
            time.sleep(0.2)
        names = collector.traces[trace_id]
        assert "POST /v1/task-runner/runs" in names, names
        for prefix in ("StartWorkflow:", "RunWorkflow:", "StartActivity:", "RunActivity:"):
            assert any(n.startswith(prefix) for n in names), (prefix, names)
        assert {service for service, _ in collector.spans} == {"taskrunner-dev-test"}
    finally:
        process.terminate()
        process.wait(timeout=30)
        for pid in processes_with(str(data_dir)):
            subprocess.run(["kill", "-9", str(pid)], check=False)
        collector.close()
