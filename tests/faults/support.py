"""Processes the fault tests kill and restart: a worker, the API, a Temporal dev server of their
own. Each runs in its own process group (as a deployment runs it), so a SIGKILL takes the whole
group, shell steps included, the way a crashed machine would."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter

from tests.helpers import logs_of, state_of
from workflows.contract.names import SEARCH_ATTRIBUTES
from workflows.contract.state import LogEntry, RunStateSnapshot


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Group:
    """A command run in a process group of its own, which can be killed and started again."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.argv = argv
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def signal(self, sig: signal.Signals, wait: float = 20) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL the whole group: no goodbye, no cleanup, mid-whatever it was doing."""
        self.signal(signal.SIGKILL)

    def stop(self) -> None:
        self.signal(signal.SIGTERM)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@contextmanager
def group(argv: list[str], env: dict[str, str], log: Path) -> Iterator[Group]:
    process = Group(argv, env, log)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def worker_env(address: str, task_queue: str, data_dir: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "TEMPORAL_ADDRESS": address,
        "TASKRUNNER_TASK_QUEUE": task_queue,
        "TASKRUNNER_DATA_DIR": str(data_dir),
        **extra,
    }


WORKER = [sys.executable, "-m", "workflows.worker"]
API = [sys.executable, "-m", "cli.main", "api"]


def temporal_server_argv(db_file: Path, port: int) -> list[str]:
    """`temporal server start-dev` on a database file, headless, with our search attributes."""
    argv = [
        str(Path(sysconfig.get_path("scripts")) / "temporal"),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--http-port",
        str(free_port()),
        "--metrics-port",
        str(free_port()),
        "--headless",
        "--db-filename",
        str(db_file),
        "--log-level",
        "error",
    ]
    for key in SEARCH_ATTRIBUTES:
        argv += ["--search-attribute", f"{key.name}=Keyword"]
    return argv


async def connect(address: str, timeout: float = 60) -> Client:
    """A client of the server at `address`, retrying while it starts."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await Client.connect(address, data_converter=pydantic_data_converter)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


async def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as http:
        while True:
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer in {timeout}s")
            await asyncio.sleep(0.1)


def trail(data_dir: Path, tenant: str, run_id: str) -> list[str]:
    """Lines the run's shell steps appended to `trail.txt` in its workspace."""
    path = data_dir / "runs" / tenant / run_id / "workspace" / "trail.txt"
    return path.read_text().split() if path.exists() else []


def assert_gap_free(entries: list[LogEntry] | list[dict[str, Any]]) -> None:
    sequences = [e.sequence if isinstance(e, LogEntry) else e["sequence"] for e in entries]
    assert sequences == list(range(1, len(sequences) + 1)), sequences


async def final_view(handle: WorkflowHandle[Any, Any]) -> tuple[RunStateSnapshot, list[LogEntry]]:
    return await state_of(handle), await logs_of(handle)


def ndjson(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
