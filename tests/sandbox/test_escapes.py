"""The escape suite: a hostile pack author attacks a real worker (real Temporal dev server, real
bubblewrap sandbox, real cgroups) the way issue #11 describes, and every attack fails; the same
pack in an honest form (its own inputs, its own outputs, an allowlisted loopback port) succeeds.

One worker serves the whole module; every attack is a run of its own, of one `builtin:shell`
step, and every test that starts processes checks none is left afterwards.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.testing import WorkflowEnvironment

from activities.sandbox.host import host_sandbox
from tests.helpers import logs_of, result_of, start_pack, state_of, unique, worker_for
from tests.processes import processes_with
from workflows.contract.activities import ArtifactRecord
from workflows.contract.names import QUERY_ARTIFACTS
from workflows.settings import WorkerSettings

DISK_MIB = 40
WORKER_SECRET = "worker-only-secret-value-4242"
DECLARED_SECRET = "declared-secret-value-7777"

pytestmark = pytest.mark.skipif(
    host_sandbox().unavailable is not None,
    reason=f"this host cannot sandbox: {host_sandbox().unavailable}",
)


@dataclass
class Worker:
    env: WorkflowEnvironment
    task_queue: str
    data_dir: Path


@dataclass
class Outcome:
    status: str
    step: Any
    message: str
    logs: list[Any]
    artifacts: list[Any]
    error: str | None

    @property
    def stdout(self) -> str:
        return str(self.step.outputs.get("stdout", ""))

    @property
    def stderr(self) -> str:
        return str(self.step.outputs.get("stderr", ""))


@pytest.fixture(scope="module")
def honest_server() -> Iterator[int]:
    """An HTTP server on loopback the honest pack may reach (and nothing else may)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"hello from the allowlisted port"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def other_server() -> Iterator[int]:
    """A loopback port that is not on any allowlist."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
async def worker(
    dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Worker]:
    # What a worker has in its environment and must never hand to a step.
    os.environ["TASKRUNNER_SECRET_UNDECLARED"] = WORKER_SECRET
    os.environ["TASKRUNNER_SECRET_TOKEN"] = DECLARED_SECRET
    data_dir = tmp_path_factory.mktemp("escape-data")
    settings = WorkerSettings(
        signing_key="escape-suite-signing-key",
        sandbox_disk_mib=DISK_MIB,
        sandbox_pids_max=64,
        # The honest pack reaches a loopback port: the operator's opt-in to internal targets.
        sandbox_egress_allow_internal=True,
        temporal_address=dev_env.client.service_client.config.target_host,
    )
    task_queue = unique("escape")
    try:
        async with worker_for(dev_env.client, data_dir, task_queue, settings=settings):
            yield Worker(dev_env, task_queue, data_dir)
    finally:
        os.environ.pop("TASKRUNNER_SECRET_UNDECLARED", None)
        os.environ.pop("TASKRUNNER_SECRET_TOKEN", None)


def pack(
    command: str,
    *,
    sandbox: dict[str, Any] | None = None,
    secrets: list[str] = (),  # type: ignore[assignment]
    outputs: list[dict[str, Any]] | None = None,
    timeout: int = 60,
    env: dict[str, str] | None = None,
) -> str:
    with_: dict[str, Any] = {"command": command}
    if env:
        with_["env"] = env
    spec: dict[str, Any] = {
        "steps": [{"id": "s", "run": {"uses": "builtin:shell", "with": with_,
                                      "timeoutSeconds": timeout}}],
    }  # fmt: skip
    if sandbox:
        spec["sandbox"] = sandbox
    if secrets:
        spec["secrets"] = [{"name": n} for n in secrets]
    if outputs:
        spec["outputs"] = outputs
    return yaml.safe_dump(
        {
            "apiVersion": "stellaops.io/pack.v1",
            "kind": "TaskPack",
            "metadata": {"name": "escape", "version": "1.0.0"},
            "spec": spec,
        },
        sort_keys=False,
    )


async def run(worker: Worker, manifest: str, tenant: str = "mallory") -> Outcome:
    handle = await start_pack(worker.env.client, worker.task_queue, manifest, tenant=tenant)
    result = await result_of(handle)
    artifacts = await handle.query(QUERY_ARTIFACTS, result_type=list[ArtifactRecord])
    state = await state_of(handle)
    logs = await logs_of(handle)
    step = next(s for s in state.steps if s.stepId == "s")
    failed = [e.message for e in logs if e.eventType == "step.failed"]
    return Outcome(result.status, step, " ".join(failed), logs, artifacts, result.error)


def marker() -> str:
    """A number no other process on the machine has in its command line: markers are looked
    for host-wide, where another session's run of this suite may be sleeping too."""
    return str(uuid.uuid4().int % 10**6 + 10**6)


def no_leftovers(marker: str, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not processes_with(marker)


# ------------------------------------------------------------------ what the step sees


class TestEnvironmentAndProcesses:
    async def test_parent_and_init_environ_hold_only_the_steps_own(self, worker: Worker) -> None:
        out = await run(
            worker,
            pack(
                "for f in /proc/$PPID/environ /proc/1/environ /proc/self/environ; do "
                "tr '\\0' '\\n' < $f; done; env",
                env={"MINE": "declared"},
            ),
        )
        assert out.status == "succeeded", out.message
        seen = out.stdout + out.stderr
        assert "MINE=declared" in seen
        for leaked in (WORKER_SECRET, DECLARED_SECRET, "TASKRUNNER_SECRET_", "TASKRUNNER_SIGNING",
                       "TEMPORAL_", "PYTEST", "VIRTUAL_ENV", "HOME=/root"):  # fmt: skip
            assert leaked not in seen

    async def test_the_worker_and_other_processes_are_invisible(self, worker: Worker) -> None:
        out = await run(worker, pack("ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' '"))
        pids = [int(p) for p in out.stdout.split()]
        assert os.getpid() not in pids or len(pids) < 10
        assert len(pids) < 10, pids  # the sandbox's init, the shell, ls, grep, tr

    async def test_bundled_temporal_cli_is_not_there(self, worker: Worker) -> None:
        cli = Path(sys.executable).parent / "temporal"
        assert cli.exists()  # on the worker's side
        address = worker.env.client.service_client.config.target_host
        out = await run(worker, pack(f"{cli} workflow list --address {address}"))
        assert out.status == "failed"
        assert "not found" in out.stderr or "No such file" in out.stderr

    async def test_the_temporal_port_is_unreachable(self, worker: Worker) -> None:
        host, port = worker.env.client.service_client.config.target_host.rsplit(":", 1)
        probe = (
            f"python3 -c \"import socket; socket.create_connection(('{host}', {port}), "
            "timeout=3); print('REACHED')\""
        )
        sealed = await run(worker, pack(probe))
        assert sealed.status == "failed" and "REACHED" not in sealed.stdout
        # Even an allowlist naming it does not open it: the proxy refuses the cluster's own port.
        listed = await run(
            worker,
            pack(
                f"curl -fsS http://{host}:{port}/", sandbox={"egressAllowlist": [f"{host}:{port}"]}
            ),
        )
        assert listed.status == "failed"
        assert "egress-denied" in listed.message
        assert listed.step.outputs["limit"] == "egress-denied"

    async def test_writing_outside_the_workspace_fails(self, worker: Worker) -> None:
        targets = ["/usr/evil", "/etc/evil", "/evil", f"{worker.data_dir}/evil", "/proc/evil"]
        script = "; ".join(f"(echo x > {t}) 2>/dev/null && echo WROTE {t}" for t in targets)
        out = await run(worker, pack(script + "; echo x > /tmp/scratch && echo TMP-OK; true"))
        assert "WROTE" not in out.stdout
        assert "TMP-OK" in out.stdout  # the bounded tmpfs /tmp is the step's own
        assert not any(Path(t).exists() for t in targets[:2] + targets[3:4])


# ------------------------------------------------------------------ other tenants' data


class TestOtherTenants:
    async def test_another_tenants_files_and_artifacts_are_out_of_reach(
        self, worker: Worker
    ) -> None:
        victim = await run(
            worker,
            pack(
                "mkdir -p out && echo 'precious report' > out/report.txt",
                outputs=[{"name": "report", "type": "file", "path": "out/report.txt"}],
            ),
            tenant="victim",
        )
        assert victim.status == "succeeded", victim.message
        [record] = [a for a in victim.artifacts if a.name == "report"]
        stored = worker.data_dir / str(record.storedPath)
        workspace = stored.parents[1] / "workspace"
        attack = (
            f"ls {worker.data_dir}/runs >/dev/null 2>&1 && echo LISTED; "
            f"cat {stored} 2>/dev/null; "
            f"(echo tampered > {stored}) 2>/dev/null && echo WROTE; "
            f"(echo tampered > {workspace}/out/report.txt) 2>/dev/null && echo WROTE; "
            "find / -name report.txt -not -path '/proc/*' 2>/dev/null; true"
        )
        out = await run(worker, pack(attack), tenant="mallory")
        assert out.status == "succeeded", out.message
        assert "precious report" not in out.stdout + out.stderr
        assert "LISTED" not in out.stdout and "WROTE" not in out.stdout
        assert "report.txt" not in out.stdout  # the victim's file is nowhere in the sandbox
        assert stored.read_text() == "precious report\n"
        assert (workspace / "out" / "report.txt").read_text() == "precious report\n"

    async def test_a_hard_link_or_symlink_cannot_capture_a_host_file(self, worker: Worker) -> None:
        out = await run(
            worker,
            pack(
                "ln /etc/hostname hard.txt; ln -s /etc/hostname soft.txt; "
                "echo mine > a.txt; ln a.txt twice.txt; true",
                outputs=[
                    {"name": "hard", "type": "file", "path": "hard.txt"},
                    {"name": "soft", "type": "file", "path": "soft.txt"},
                    {"name": "twice", "type": "file", "path": "twice.txt"},
                ],
            ),
        )
        records = {a.name: a for a in out.artifacts}
        for name in ("hard", "soft", "twice"):
            assert records[name].status == "failed", records[name]
            assert records[name].storedPath is None
        assert "link" in str(records["soft"].notes) and "hard link" in str(records["twice"].notes)


# ------------------------------------------------------------------ network


class TestNetwork:
    async def test_sealed_without_allowlist_has_no_network_or_dns(
        self, worker: Worker, honest_server: int
    ) -> None:
        out = await run(
            worker,
            pack(
                f"curl -sS -m 3 http://127.0.0.1:{honest_server}/ && echo REACHED; "
                "getent hosts example.com && echo RESOLVED; "
                "python3 -c \"import socket; socket.create_connection(('1.1.1.1', 53), timeout=3)\" "
                "&& echo RAW; true"
            ),
        )
        assert out.status == "succeeded", out.message
        for word in ("REACHED", "RESOLVED", "RAW", "hello from"):
            assert word not in out.stdout

    async def test_past_the_allowlist_curl_and_raw_sockets_fail(
        self, worker: Worker, honest_server: int, other_server: int
    ) -> None:
        allow = {"egressAllowlist": [f"127.0.0.1:{honest_server}"]}
        curl = await run(worker, pack(f"curl -fsS http://127.0.0.1:{other_server}/", sandbox=allow))
        assert curl.status == "failed"
        assert curl.step.outputs["limit"] == "egress-denied"
        assert curl.step.statusReason == "egress-denied"
        assert f"127.0.0.1:{other_server} (not in sandbox.egressAllowlist)" in curl.message
        assert f"the proxy refused 127.0.0.1:{other_server}" in curl.stderr
        raw = await run(
            worker,
            pack(
                "python3 -c \"import socket; socket.create_connection(('127.0.0.1', "
                f"{other_server}), timeout=3); print('RAW-REACHED')\"",
                sandbox=allow,
            ),
        )
        assert raw.status == "failed" and "RAW-REACHED" not in raw.stdout
        dns = await run(
            worker, pack("getent hosts example.com && echo RESOLVED; true", sandbox=allow)
        )
        assert "RESOLVED" not in dns.stdout

    async def test_a_refusal_the_command_survives_is_named_in_the_steps_log(
        self, worker: Worker, honest_server: int, other_server: int
    ) -> None:
        out = await run(
            worker,
            pack(
                f"curl -s http://127.0.0.1:{other_server}/ || echo FELL-BACK; "
                f"curl -fsS http://127.0.0.1:{honest_server}/",
                sandbox={"egressAllowlist": [f"127.0.0.1:{honest_server}"]},
            ),
        )
        assert out.status == "succeeded", out.message
        assert out.step.statusReason is None and "limit" not in out.step.outputs
        assert "hello from the allowlisted port" in out.stdout
        refused = [line for line in out.stderr.splitlines() if "egress-denied" in line]
        assert refused == [
            f"taskrunner: egress-denied: the proxy refused 127.0.0.1:{other_server} "
            "(not in sandbox.egressAllowlist)"
        ]
        assert f"127.0.0.1:{honest_server}" not in out.stderr  # the allowed one is not named
        # And the run's log, where people look first, says it too.
        [entry] = [e for e in out.logs if e.eventType == "step.egress-denied"]
        assert (entry.level, entry.stepId) == ("warn", "s")
        assert entry.message == (
            f"Egress refused: s: 127.0.0.1:{other_server} (not in sandbox.egressAllowlist)"
        )

    async def test_honest_pack_reaches_its_allowlisted_port_and_captures_its_output(
        self, worker: Worker, honest_server: int
    ) -> None:
        out = await run(
            worker,
            pack(
                f"mkdir -p out && curl -fsS http://127.0.0.1:{honest_server}/ > out/page.txt && "
                "cat out/page.txt",
                sandbox={"egressAllowlist": [f"127.0.0.1:{honest_server}"]},
                outputs=[{"name": "page", "type": "file", "path": "out/page.txt"}],
            ),
        )
        assert out.status == "succeeded", out.message
        assert "hello from the allowlisted port" in out.stdout
        [page] = [a for a in out.artifacts if a.name == "page"]
        assert page.status == "captured"
        assert (worker.data_dir / str(page.storedPath)).read_text() == (
            "hello from the allowlisted port"
        )


# ------------------------------------------------------------------ limits


class TestLimits:
    async def test_memory_beyond_the_limit_in_many_processes(self, worker: Worker) -> None:
        mark = marker()
        # 40 MiB, every page touched; the marker names these processes in the host's /proc.
        hog = f"import time; x = b'x' * 41943040; time.sleep(3.{mark})"
        out = await run(
            worker,
            pack(
                f'for i in 1 2 3 4 5; do python3 -c "{hog}" & done; wait; echo ALL-ALLOCATED',
                sandbox={"memoryLimitMiB": 64},
            ),
        )
        assert out.status == "failed"
        assert out.step.outputs["limit"] == "memory-limit", out.message
        assert out.step.statusReason == "memory-limit"
        assert out.error == "step s failed (memory-limit)"
        assert "memory-limit" in out.message
        assert no_leftovers(f"time.sleep(3.{mark})")

    async def test_cpu_share_is_held_to_the_millicores(self, worker: Worker) -> None:
        spin = (
            "import time; t = time.monotonic(); "
            "exec('while time.monotonic() - t < 2: pass'); "
            "print('CPU', round(time.process_time(), 2))"
        )
        out = await run(worker, pack(f'python3 -c "{spin}"', sandbox={"cpuLimitMillicores": 100}))
        assert out.status == "succeeded", out.message
        used = float(out.stdout.split("CPU", 1)[1])
        assert used < 0.6, f"{used}s of CPU in 2 s of wall time under 100 millicores"

    async def test_cpu_time_quota_across_forked_processes(self, worker: Worker) -> None:
        started = time.monotonic()
        spin = f"while :; do :; done # {marker()}"
        out = await run(
            worker,
            pack(
                f"for i in 1 2 3 4; do ({spin}\n) & done; wait",
                sandbox={"quotaSeconds": 2, "cpuLimitMillicores": 4000},
                timeout=60,
            ),
        )
        assert out.status == "failed"
        assert out.step.outputs["limit"] == "cpu-time-limit", out.message
        assert out.step.statusReason == "cpu-time-limit"
        assert time.monotonic() - started < 30
        assert no_leftovers(spin)

    async def test_wall_time_is_the_steps_timeout(self, worker: Worker) -> None:
        sleep = f"sleep 30.{marker()}"
        out = await run(worker, pack(sleep, timeout=2))
        assert out.status == "failed"
        assert out.step.outputs["limit"] == "timeout"
        assert out.step.statusReason == "timeout"
        assert "timeout" in out.message
        assert no_leftovers(sleep)

    async def test_disk_written_in_the_workspace(self, worker: Worker) -> None:
        sleep = f"sleep 30.{marker()}"
        out = await run(
            worker,
            pack(
                "for i in $(seq 1 30); do head -c 10485760 /dev/zero > blob$i; done; "
                f"{sleep}; echo DONE"
            ),
        )
        assert out.status == "failed"
        assert out.step.outputs["limit"] == "disk-limit", out.message
        assert out.step.statusReason == "disk-limit"
        assert "DONE" not in out.stdout
        assert no_leftovers(sleep)

    async def test_tmp_is_bounded(self, worker: Worker) -> None:
        out = await run(worker, pack("head -c 300000000 /dev/zero > /tmp/big"))
        assert out.status == "failed"
        # The tmpfs is full, or the worker's per-file cap stopped the write first.
        assert "No space left" in out.stderr or out.step.outputs.get("limit") == "disk-limit"

    async def test_fork_bomb_is_contained(self, worker: Worker) -> None:
        bomb = f"bomb{marker()}"
        out = await run(
            worker, pack(f"{bomb}() {{ {bomb} | {bomb} & }}; {bomb}; sleep 3", timeout=10)
        )
        assert out.status == "failed"
        assert out.step.outputs.get("limit") == "pids-limit", out.message
        assert out.step.statusReason == "pids-limit"
        assert no_leftovers(f"{bomb} | {bomb}", within=10)
        after = await run(worker, pack("echo still-fine"))
        assert after.status == "succeeded" and "still-fine" in after.stdout

    async def test_setsid_and_double_forks_do_not_outlive_the_step(self, worker: Worker) -> None:
        mark = marker()
        out = await run(
            worker,
            pack(
                f"setsid sleep 120.{mark}1 & nohup sleep 120.{mark}2 >/dev/null 2>&1 & "
                f"(sh -c 'sleep 120.{mark}3 &' &) ; echo started"
            ),
        )
        assert out.status == "succeeded", out.message
        assert no_leftovers(f"sleep 120.{mark}")


# ------------------------------------------------------------------ secrets


class TestSecrets:
    async def test_only_referenced_secrets_and_none_left_on_disk(self, worker: Worker) -> None:
        manifest = pack(
            'echo "$TOKEN" > token.txt; printf \'{"t": "%s"}\' "$TOKEN" > cfg.json; '
            'env | grep -c TASKRUNNER_SECRET_ ; echo "undeclared:[$UNDECLARED]"',
            secrets=["TOKEN"],
            env={"TOKEN": "{{ secrets.TOKEN }}"},
        )
        out = await run(worker, manifest, tenant="secrets")
        assert out.status == "succeeded", out.message
        assert "undeclared:[]" in out.stdout
        assert WORKER_SECRET not in json.dumps(out.step.outputs)
        runs = worker.data_dir / "runs" / "secrets"
        for path in runs.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert DECLARED_SECRET.encode() not in data, path
                assert WORKER_SECRET.encode() not in data, path
        [token] = list(runs.glob("*/workspace/token.txt"))
        assert token.read_text() == "***\n"
