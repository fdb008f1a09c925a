"""Fixtures for the activities tests: a real artifact store in tmp_path, executor contexts, and a
real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from activities.artifacts import ArtifactStore
from activities.executor import ExecutorContext
from activities.masking import Masker
from compiler.plan import Sandbox

TENANT = "acme"
RUN_ID = "run-1"


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "store")


MakeCtx = Callable[..., ExecutorContext]


@pytest.fixture
def make_ctx(store: ArtifactStore) -> MakeCtx:
    def make(
        uses: str = "builtin:shell",
        step_id: str = "step",
        sandbox: Sandbox | None = None,
        secrets: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> ExecutorContext:
        return ExecutorContext(
            run_id=RUN_ID,
            tenant=TENANT,
            step_id=step_id,
            uses=uses,
            workspace=store.workspace(TENANT, RUN_ID),
            store=store,
            sandbox=sandbox or Sandbox(),
            mask=Masker(secrets),
            **kwargs,
        )

    return make


class Recorder:
    """What the test server received."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []


class _Handler(BaseHTTPRequestHandler):
    recorder: Recorder

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        url = urlsplit(self.path)
        self.recorder.requests.append(
            {"method": self.command, "path": url.path, "headers": dict(self.headers), "body": body}
        )
        query = parse_qs(url.query)
        if url.path == "/json":
            self._send(200, json.dumps({"hello": "world", "n": 1}), "application/json")
        elif url.path == "/text":
            self._send(200, "plain text", "text/plain; charset=utf-8")
        elif url.path.startswith("/status/"):
            self._send(int(url.path.rsplit("/", 1)[1]), "status body", "text/plain")
        elif url.path == "/echo":
            payload = {"method": self.command, "headers": dict(self.headers), "body": body}
            self._send(200, json.dumps(payload), "application/json")
        elif url.path == "/big":
            self._send(200, "x" * 100_000, "text/plain")
        elif url.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", query["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(404, "not found", "text/plain")

    def _send(self, status: int, text: str, content_type: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Multi", "a")
        self.send_header("X-Multi", "b")
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _handle


class Server:
    def __init__(self, base: str, port: int, recorder: Recorder) -> None:
        self.base = base
        self.port = port
        self.recorder = recorder


@pytest.fixture
def http_server() -> Iterator[Server]:
    recorder = Recorder()
    handler = type("Handler", (_Handler,), {"recorder": recorder})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    # A short poll interval: shutdown() waits for the next poll.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        yield Server(f"http://127.0.0.1:{port}", port, recorder)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
