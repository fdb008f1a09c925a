"""The schema in a real editor's language server: yaml-language-server (VS Code's YAML extension,
Neovim's yamlls, and others), pinned in tests/editor/package.json and installed by `make editor`.

Over the Language Server Protocol, as an editor speaks it: every example, opened where it lies
(its first line names ../schema/taskpack.schema.json), gets no diagnostics; mistakes get one on
their line; completion offers a step's keys and an executor's parameters; hover shows the
descriptions.
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SERVER = HERE / "node_modules" / "yaml-language-server" / "bin" / "yaml-language-server"
EXAMPLES = sorted((ROOT / "examples").rglob("*.yaml"))
SETTINGS = {"validate": True, "completion": True, "hover": True, "schemaStore": {"enable": False}}


class Client:
    """A language server client: JSON-RPC with Content-Length framing over the server's stdio."""

    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        self.inbox: queue.Queue[dict[str, Any]] = queue.Queue()
        self.last_id = 0
        assert self.process.stdout is not None
        self.reader = threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True)
        self.reader.start()

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        self.reader.join(timeout=10)  # the pipe ends with the process
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()

    def _read(self, out: IO[bytes]) -> None:
        while True:
            headers: dict[str, str] = {}
            while line := out.readline():
                text = line.decode().strip()
                if not text:
                    break
                key, _, value = text.partition(":")
                headers[key.lower()] = value.strip()
            if not headers:
                return
            self.inbox.put(json.loads(out.read(int(headers["content-length"]))))

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        data = json.dumps({"jsonrpc": "2.0", **message}).encode()
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(data) + data)
        self.process.stdin.flush()

    def request(self, method: str, params: dict[str, Any]) -> Any:
        self.last_id += 1
        wanted = self.last_id
        self.send({"id": wanted, "method": method, "params": params})
        return self.wait(lambda m: m.get("id") == wanted and "method" not in m)["result"]

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self.send({"method": method, "params": params})

    def wait(self, wanted: Callable[[dict[str, Any]], bool], timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = self.inbox.get(timeout=left)
            except queue.Empty:
                break
            if "method" in message and "id" in message:  # the server asks: answer it
                items = message["params"].get("items", [])
                result = (
                    [SETTINGS] * len(items) if message["method"].endswith("configuration") else None
                )
                self.send({"id": message["id"], "result": result})
            elif wanted(message):
                return message
        raise AssertionError("the language server did not answer in time")

    def diagnostics(self, path: Path, text: str) -> list[tuple[int, str]]:
        """(line, message) of what the server flags in `text`, opened as the file `path`."""
        uri = path.as_uri()
        self.notify(
            "textDocument/didOpen",
            {"textDocument": {"uri": uri, "languageId": "yaml", "version": 1, "text": text}},
        )
        published = self.wait(
            lambda m: (
                m.get("method") == "textDocument/publishDiagnostics" and m["params"]["uri"] == uri
            )
        )
        return [
            (d["range"]["start"]["line"], d["message"]) for d in published["params"]["diagnostics"]
        ]


@pytest.fixture(scope="module")
def server() -> Iterator[Client]:
    node = shutil.which("node")
    if node is None or not SERVER.exists():
        pytest.fail(
            "the editor tests need node and yaml-language-server: run `make editor` "
            "(npm ci in tests/editor; node from Debian's nodejs)"
        )
    client = Client([node, str(SERVER), "--stdio"])
    try:
        client.request(
            "initialize",
            {
                "processId": None,
                "rootUri": ROOT.as_uri(),
                "capabilities": {"workspace": {"configuration": True}},
            },
        )
        client.notify("initialized", {})
        client.notify("workspace/didChangeConfiguration", {"settings": {"yaml": SETTINGS}})
        yield client
    finally:
        client.close()


def beside(example: Path, name: str) -> Path:
    """A document opened next to `example`, so its modeline's relative path still resolves."""
    return example.parent / name


def test_the_examples_are_found() -> None:
    assert len(EXAMPLES) >= 10


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT / "examples")))
def test_every_example_is_clean_in_the_editor(server: Client, path: Path) -> None:
    assert server.diagnostics(path, path.read_text()) == []


RUN = ROOT / "examples" / "run.yaml"
NESTED = ROOT / "examples" / "nested.yaml"


def test_mistakes_are_flagged_on_their_line(server: Client) -> None:
    text = RUN.read_text()
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip() == "uses: builtin:echo")
    indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
    misspelt = "\n".join([*lines[: at + 1], f"{indent}retires: 3", *lines[at + 1 :]]) + "\n"
    assert server.diagnostics(beside(RUN, "_misspelt.yaml"), misspelt) == [
        (at + 1, "Property retires is not allowed.")
    ]

    text = NESTED.read_text()
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip() == "uses: builtin:shell")
    indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
    assert lines[at + 1].strip() == "with:"
    wrong = [*lines[: at + 2], f"{indent}  comand: ls", *lines[at + 2 :]]
    found = server.diagnostics(beside(NESTED, "_param.yaml"), "\n".join(wrong) + "\n")
    assert found == [(at + 2, "Property comand is not allowed.")]


PACK = """\
# yaml-language-server: $schema=../schema/taskpack.schema.json
apiVersion: stellaops.io/pack.v1
kind: TaskPack
metadata: {name: typed, version: "1"}
spec:
  steps:
    - id: nap
      run:
        uses: builtin:sleep
        with:
          x: 1
"""


def test_completion_and_hover(server: Client) -> None:
    uri = beside(RUN, "_complete.yaml").as_uri()
    server.notify(
        "textDocument/didOpen",
        {"textDocument": {"uri": uri, "languageId": "yaml", "version": 1, "text": PACK}},
    )
    doc = {"textDocument": {"uri": uri}}

    def labels(line: int, character: int) -> list[str]:
        found = server.request(
            "textDocument/completion", {**doc, "position": {"line": line, "character": character}}
        )
        items = found["items"] if isinstance(found, dict) else found
        return [item["label"] for item in items]

    assert "seconds" in labels(10, 10)  # builtin:sleep's parameter, inside `with`
    step_keys = labels(6, 6)  # a step's keys, beside `id`
    assert {"when", "parallel", "map", "loop", "conditional", "gate"} <= set(step_keys)
    hover = server.request("textDocument/hover", {**doc, "position": {"line": 7, "character": 7}})
    assert "Call an executor" in hover["contents"]["value"]
