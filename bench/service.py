"""The service as a deployment runs it, for the benchmarks: a worker and the API, each in a process
of its own (`python -m workflows.worker`, `taskrunner api`), against a Temporal server.

Separate processes, so the load the benchmark's own client puts on its Python interpreter does
not slow the API or the worker down through a shared GIL.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Service:
    url: str
    """Base URL of the API, e.g. `http://127.0.0.1:PORT`."""
    task_queue: str


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            env=env,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@contextmanager
def service(
    temporal_address: str, task_queue: str, data_dir: Path, extra_env: dict[str, str] | None = None
) -> Iterator[Service]:
    """A worker and the API (auth off, as `taskrunner dev` runs it) until the block ends.
    `extra_env`: more settings (e.g. TASKRUNNER_DATABASE_URL; the API's database is SQLite in
    `data_dir` without it).

    Their logs go to `worker.log` and `api.log` in `data_dir`.
    """
    port = free_port()
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": temporal_address,
        "TASKRUNNER_TASK_QUEUE": task_queue,
        "TASKRUNNER_DATA_DIR": str(data_dir),
        "TASKRUNNER_AUTH_ENABLED": "false",
        "TASKRUNNER_API_HOST": "127.0.0.1",
        "TASKRUNNER_API_PORT": str(port),
        **(extra_env or {}),
    }
    worker = _spawn([sys.executable, "-m", "workflows.worker"], env, data_dir / "worker.log")
    api = _spawn([sys.executable, "-m", "cli.main", "api"], env, data_dir / "api.log")
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if api.poll() is not None or worker.poll() is not None:
                raise RuntimeError("the API or the worker exited at start-up")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API at {url} did not become ready")
            time.sleep(0.2)
        yield Service(url=url, task_queue=task_queue)
    finally:
        _stop(api)
        _stop(worker)
