"""`taskrunner dev` as a user runs it: the real command in a subprocess, with the real dev server.

A port already taken is named, with the flag that changes it, before anything starts (a foreign
Temporal server on the frontend port used to answer the health check: the service attached to
it, printed its banner, then died). Two instances on different ports run side by side, the dev
server's extra ports pinned. Ctrl-C stops everything quietly: no Temporal warnings, no
traceback, no alembic narration, no process left behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sysconfig
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from cli.service_commands import TEMPORAL_LOG_FILE, port_in_use
from tests.processes import processes_with

TASKRUNNER = str(Path(sysconfig.get_path("scripts")) / "taskrunner")
START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
BANNER = "TaskRunner is running"
PORT_FLAGS = ("--port", "--api-port", "--ui-port", "--metrics-port", "--http-port")
STEP_MARKER = "sleep 61.4173"
BUSY_PACK = f"""
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {{name: busy, version: 1.0.0}}
spec:
  steps:
    - id: wait
      run:
        uses: builtin:shell
        with: {{script: "{STEP_MARKER}"}}
"""


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free right now (the kernel's ephemeral picks)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def dev_args(data_dir: Path, ports: list[int]) -> list[str]:
    args = [TASKRUNNER, "dev", "--data-dir", str(data_dir)]
    for flag, port in zip(PORT_FLAGS, ports, strict=True):
        args += [flag, str(port)]
    return args


def clean_env() -> dict[str, str]:
    """This environment without settings that would steer the service elsewhere."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TASKRUNNER_", "TEMPORAL_"))
    }


@contextmanager
def listening(port: int) -> Iterator[None]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield


class Dev:
    """One `taskrunner dev` subprocess, its output in a file."""

    def __init__(self, data_dir: Path, ports: list[int]) -> None:
        self.data_dir = data_dir
        self.ports = dict(zip(PORT_FLAGS, ports, strict=True))
        data_dir.mkdir(parents=True)
        self.out_path = data_dir.parent / f"{data_dir.name}.out"
        with self.out_path.open("wb") as out:
            self.process = subprocess.Popen(
                dev_args(data_dir, ports),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=clean_env(),
                # A process group of its own, as a shell gives a foreground job: Ctrl-C is
                # sent to the whole group.
                start_new_session=True,
            )

    @property
    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait_for(self, condition: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not (BANNER in self.output if condition == "banner" else self._spawned()):
            assert self.process.poll() is None, self.output
            assert time.monotonic() < deadline, self.output
            time.sleep(0.2)

    def _spawned(self) -> bool:
        return (self.data_dir / TEMPORAL_LOG_FILE).exists()

    def interrupt(self) -> int:
        """Ctrl-C, as a terminal delivers it: SIGINT to every process of the foreground group."""
        os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(timeout=STOP_TIMEOUT)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pid in processes_with(str(self.data_dir)):
            os.kill(pid, signal.SIGKILL)


def assert_quiet_stop(dev: Dev, code: int) -> None:
    output = dev.output
    assert code in (0, 130), output
    for noise in ("Traceback", "level=WARN", "level=ERROR", "Failed to poll", "alembic"):
        assert noise not in output, (noise, output)
    assert "stopped (worker, API and Temporal dev server)" in output
    # The dev server went with it, and every port is free for the next start.
    assert processes_with(str(dev.data_dir)) == []
    for flag, port in dev.ports.items():
        assert not port_in_use("127.0.0.1", port), (flag, port)


async def test_a_temporal_server_on_the_port_is_named_not_attached_to(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    foreign = int(dev_env.client.service_client.config.target_host.rsplit(":", 1)[1])
    ports = [foreign, *free_ports(4)]
    result = subprocess.run(
        dev_args(tmp_path / "var", ports),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        env=clean_env(),
    )
    assert result.returncode == 1, result
    assert f"port {foreign} on 127.0.0.1 (the Temporal frontend) is in use" in result.stderr
    assert "choose another port with --port" in result.stderr
    assert BANNER not in result.stdout
    # Nothing was started: no dev server of ours, no files written.
    assert processes_with(str(tmp_path / "var")) == []
    assert not (tmp_path / "var" / TEMPORAL_LOG_FILE).exists()


@pytest.mark.parametrize("flag", ["--api-port", "--metrics-port"])
def test_any_other_port_taken_is_named_with_its_flag(flag: str, tmp_path: Path) -> None:
    ports = free_ports(len(PORT_FLAGS))
    taken = ports[PORT_FLAGS.index(flag)]
    with listening(taken):
        result = subprocess.run(
            dev_args(tmp_path / "var", ports),
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            env=clean_env(),
        )
    assert result.returncode == 1, result
    assert f"port {taken} on 127.0.0.1" in result.stderr
    assert f"choose another port with {flag}" in result.stderr
    assert BANNER not in result.stdout


def free_base_port(offsets: tuple[int, ...]) -> int:
    """A free port P with P + each offset free too."""
    for port in free_ports(20):
        if port + max(offsets) < 65536 and not any(
            port_in_use("127.0.0.1", port + offset) for offset in offsets
        ):
            return port
    raise AssertionError("no free port with free neighbours")


@pytest.mark.parametrize(
    ("offset", "flag"), [(1000, "--ui-port"), (1001, "--metrics-port"), (10, "--http-port")]
)
def test_the_dev_servers_other_ports_follow_its_port(
    offset: int, flag: str, tmp_path: Path
) -> None:
    # Unset, each is --port plus an offset (7233: UI 8233, metrics 8234, HTTP 7243), so a second
    # instance moved with --port alone collides with nothing of the first.
    port = free_base_port((1000, 1001, 10))
    (api_port,) = free_ports(1)
    args = [TASKRUNNER, "dev", "--data-dir", str(tmp_path / "var"), "--port", str(port)]
    with listening(port + offset):
        result = subprocess.run(
            [*args, "--api-port", str(api_port)],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            env=clean_env(),
        )
    assert result.returncode == 1, result
    assert f"port {port + offset} on 127.0.0.1" in result.stderr
    assert f"choose another port with {flag}" in result.stderr


def test_one_port_for_two_things_is_refused(tmp_path: Path) -> None:
    ports = free_ports(len(PORT_FLAGS))
    ports[PORT_FLAGS.index("--ui-port")] = ports[PORT_FLAGS.index("--api-port")]
    result = subprocess.run(
        dev_args(tmp_path / "var", ports),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        env=clean_env(),
    )
    assert result.returncode == 1, result
    port = ports[PORT_FLAGS.index("--ui-port")]
    assert f"the Temporal Web UI and the API would both listen on port {port}" in result.stderr
    assert "choose another with --ui-port or --api-port" in result.stderr


def test_two_instances_side_by_side_then_ctrl_c_stops_each_quietly(tmp_path: Path) -> None:
    ports = free_ports(2 * len(PORT_FLAGS))
    devs = [
        Dev(tmp_path / "a", ports[: len(PORT_FLAGS)]),
        Dev(tmp_path / "b", ports[len(PORT_FLAGS) :]),
    ]
    try:
        for dev in devs:
            dev.wait_for("banner")
        for dev in devs:
            api = f"http://127.0.0.1:{dev.ports['--api-port']}"
            assert httpx.get(f"{api}/readyz", timeout=10).status_code == 200, dev.output
            # The dev server's metrics are where the flag put them, not on a random port.
            metrics = httpx.get(f"http://127.0.0.1:{dev.ports['--metrics-port']}/metrics")
            assert metrics.status_code == 200
            assert f":{dev.ports['--metrics-port']}/metrics" in dev.output  # in the banner
        # A step in flight when Ctrl-C comes: cancelled with the rest, its process gone too.
        api = f"http://127.0.0.1:{devs[0].ports['--api-port']}/v1/task-runner"
        started = httpx.post(f"{api}/runs", json={"manifest": BUSY_PACK}, timeout=30)
        assert started.status_code == 201, started.text
        deadline = time.monotonic() + START_TIMEOUT
        while not processes_with(STEP_MARKER):
            assert time.monotonic() < deadline, devs[0].output
            time.sleep(0.2)
        for dev in devs:
            assert_quiet_stop(dev, dev.interrupt())
        assert processes_with(STEP_MARKER) == []
        # What the dev server said went to its log, not into the terminal.
        assert "Temporal Server:" in (devs[0].data_dir / TEMPORAL_LOG_FILE).read_text()
    finally:
        for dev in devs:
            dev.kill()


def test_ctrl_c_while_starting_stops_quietly(tmp_path: Path) -> None:
    dev = Dev(tmp_path / "var", free_ports(len(PORT_FLAGS)))
    try:
        dev.wait_for("spawned")
        code = dev.interrupt()
        assert BANNER not in dev.output
        assert_quiet_stop(dev, code)
    finally:
        dev.kill()


def test_a_dev_server_that_dies_is_reported_with_the_end_of_its_log(tmp_path: Path) -> None:
    dev = Dev(tmp_path / "var", free_ports(len(PORT_FLAGS)))
    try:
        dev.wait_for("banner")
        (temporal,) = [pid for pid in processes_with(str(dev.data_dir)) if pid != dev.process.pid]
        os.kill(temporal, signal.SIGKILL)
        code = dev.process.wait(timeout=STOP_TIMEOUT)
        assert code == 1, dev.output
        assert "the Temporal dev server stopped unexpectedly; shutting down" in dev.output
        # Where to look, and the last lines of what it said.
        assert f"the end of {dev.data_dir / TEMPORAL_LOG_FILE}:" in dev.output
        assert "  Temporal Server:" in dev.output
        assert processes_with(str(dev.data_dir)) == []
    finally:
        dev.kill()
