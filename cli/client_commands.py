"""Client commands: `taskrunner runs create|list|show|logs|approve|cancel`, talking to a running
API over HTTP, as any REST caller would.

The API is `TASKRUNNER_URL` (default http://127.0.0.1:8080, what `taskrunner dev` serves); a
bearer token comes from `TASKRUNNER_TOKEN` and a tenant from `TASKRUNNER_TENANT`, when set
(`--url`, `--token` and `--tenant` override them).

`show` draws a run's step tree, a status symbol per step, indented by nesting; `show --watch` and
`create --wait` keep it current until the run ends: redrawn in place on a terminal, as one line
per change otherwise. Exit codes: 0 for success (a run that ended succeeded), 1 for a run that
failed or was cancelled and for any error (the API's message, in one line), 2 for an invalid
manifest or inputs (`path: message` lines).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from cli.completion_commands import RUN_IDS, completes
from cli.main import EXIT_ERROR, EXIT_OK, CliError, Subcommands
from cli.output import (
    STATUS_STYLES,
    add_output_option,
    console,
    dump,
    duration,
    json_text,
    printable,
    table,
)

DEFAULT_URL = "http://127.0.0.1:8080"
API = "/v1/task-runner"
POLL_SECONDS = 0.5
RESUME_FOR_SECONDS = 300.0
"""`--follow`, `--watch` and `--wait` keep trying an API or run they cannot reach this long."""
RETRY_SECONDS = 1.0


class Unreachable(CliError):
    """The API, or the run through it, did not answer for now (a restart, a worker outage): a
    follower tries again rather than end as if the run had."""


STEPS_PAGE = 2000
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})

SYMBOLS = {
    "Pending": "○",
    "Running": "▶",
    "Succeeded": "✓",
    "Failed": "✗",
    "Skipped": "⊘",
    "awaiting": "⏸",
}
ASCII_SYMBOLS = {
    "Pending": ".",
    "Running": ">",
    "Succeeded": "+",
    "Failed": "x",
    "Skipped": "-",
    "awaiting": "?",
}


def api_options() -> argparse.ArgumentParser:
    """`--url`, `--token` and `--tenant`: the parent parser of every command that calls the API."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"the API (default: TASKRUNNER_URL, else {DEFAULT_URL})")
    common.add_argument("--token", help="bearer token (default: TASKRUNNER_TOKEN)")
    common.add_argument("--tenant", help="tenant (default: TASKRUNNER_TENANT, else the API's)")
    return common


@contextlib.contextmanager
def api_session(args: argparse.Namespace) -> Iterator[Api]:
    """An `Api` for the command's `--url/--token/--tenant`, closed when the command is done."""
    api = Api(args)
    try:
        yield api
    finally:
        api.http.close()


def register(subcommands: Subcommands) -> None:
    common = api_options()

    runs = subcommands.add_parser(
        "runs",
        help="create, list, watch, approve and cancel runs through the API",
        description="Talk to a running TaskRunner API (TASKRUNNER_URL) as a REST caller.",
    )
    actions = runs.add_subparsers(title="commands", metavar="COMMAND", dest="runs", required=True)

    create = actions.add_parser(
        "create", parents=[common], help="start a run of a pack", description="Start a run."
    )
    create.add_argument(
        "pack",
        help="the pack: a manifest file, - for stdin, or NAME[@VERSION] of a registered pack",
    )
    create.add_argument("--inputs", help="input values: a JSON object, or a JSON or YAML file")
    create.add_argument("--run-id", help="the run's id (default: the API makes one)")
    create.add_argument(
        "--wait", action="store_true", help="follow the run until it ends; exit 0 if it succeeded"
    )
    create.set_defaults(handler=create_command)

    listing = actions.add_parser(
        "list",
        parents=[common],
        help="list runs: open ones first, then the most recently finished",
        description="List runs (open ones first, newest first; then finished ones).",
    )
    listing.add_argument(
        "--status",
        action="append",
        help="only runs with this status (repeatable): pending, running, awaiting-approval, "
        "succeeded, failed, cancelled",
    )
    listing.add_argument("--pack", help="only runs of this pack (its name)")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    add_output_option(listing)
    listing.set_defaults(handler=list_command)

    show = actions.add_parser(
        "show", parents=[common], help="a run's step tree and status", description="Show a run."
    )
    completes(show.add_argument("run_id", metavar="ID"), RUN_IDS)
    show.add_argument("--watch", action="store_true", help="follow the run until it ends")
    add_output_option(show)
    show.set_defaults(handler=show_command)

    logs = actions.add_parser(
        "logs", parents=[common], help="a run's log", description="Print a run's log."
    )
    completes(logs.add_argument("run_id", metavar="ID"), RUN_IDS)
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until it ends")
    logs.add_argument(
        "--output",
        "-o",
        choices=("json",),
        help="json: each entry as the API sent it, one JSON object a line (NDJSON)",
    )
    logs.set_defaults(handler=logs_command)

    artifacts = actions.add_parser(
        "artifacts",
        parents=[common],
        help="list a run's artifacts, or download one",
        description="Without NAME, list the run's artifacts. With NAME, download that file "
        "(to -o FILE, `-` for stdout; default: NAME in the current folder), or print an object "
        "output's value.",
    )
    completes(artifacts.add_argument("run_id", metavar="ID"), RUN_IDS)
    artifacts.add_argument("name", metavar="NAME", nargs="?")
    artifacts.add_argument(
        "--output",
        "-o",
        metavar="FILE|FORMAT",
        help="with NAME, where to write the file; without, the listing's format: json, yaml, wide",
    )
    artifacts.add_argument("--json", action="store_true", help="list them as JSON")
    artifacts.set_defaults(handler=artifacts_command)

    approve = actions.add_parser(
        "approve",
        parents=[common],
        help="decide on a run's approval gate",
        description="Approve (or with --reject, reject) a gate; the run's planHash is fetched.",
    )
    completes(approve.add_argument("run_id", metavar="ID"), RUN_IDS)
    approve.add_argument("approval_id", metavar="APPROVAL")
    approve.add_argument("--reject", action="store_true", help="reject instead of approve")
    approve.add_argument("--summary", help="why (recorded with the decision)")
    approve.set_defaults(handler=approve_command)

    cancel = actions.add_parser(
        "cancel", parents=[common], help="cancel a run", description="Cancel a run."
    )
    completes(cancel.add_argument("run_id", metavar="ID"), RUN_IDS)
    cancel.set_defaults(handler=cancel_command)

    redrive = actions.add_parser(
        "redrive",
        parents=[common],
        help="start a new run of a failed or cancelled run, reusing what succeeded",
        description="Redrive a run: steps that succeeded before the restart point are reused; "
        "gates carry over only if the planHash is unchanged.",
    )
    completes(redrive.add_argument("run_id", metavar="ID"), RUN_IDS)
    redrive.add_argument("--from", dest="from_step", help="top-level step to restart from")
    redrive.add_argument("--inputs", help="inputs to change: a JSON object, or a JSON/YAML file")
    redrive.add_argument("--pack-version", help="run another version of the registered pack")
    redrive.add_argument(
        "--run-id", dest="new_run_id", help="the new run's id (default: the API makes one)"
    )
    redrive.add_argument(
        "--dry-run", action="store_true", help="say what would be reused and re-run; start nothing"
    )
    redrive.add_argument("--wait", action="store_true", help="follow the new run until it ends")
    redrive.set_defaults(handler=redrive_command)


# ----------------------------------------------------------------- the API


class Api:
    """The REST API, with its errors turned into the CLI's: a CliError with the envelope's
    message, or a ManifestError (exit 2) for an invalid manifest or inputs."""

    def __init__(self, args: argparse.Namespace) -> None:
        import httpx

        self.url = (args.url or os.environ.get("TASKRUNNER_URL") or DEFAULT_URL).rstrip("/")
        headers = {"User-Agent": "taskrunner-cli"}
        token = args.token or os.environ.get("TASKRUNNER_TOKEN")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        tenant = args.tenant or os.environ.get("TASKRUNNER_TENANT")
        if tenant:
            headers["X-StellaOps-Tenant"] = tenant
        self.http = httpx.Client(base_url=self.url + API, headers=headers, timeout=30)
        # For people, answers are shown with terminal controls spelled out (cli.output.printable);
        # -o json|yaml keep them as the API sent them.
        self.for_people = getattr(args, "output", None) not in ("json", "yaml")

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(f"cannot reach the API at {self.url}: {exc}") from None
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the API at {self.url}: {exc}") from None
        self.check(response)
        answer = response.json() if response.content else None
        return printable(answer) if self.for_people else answer

    def stream_lines(self, path: str, params: dict[str, Any]) -> Iterator[str]:
        import httpx

        try:
            with self.http.stream(
                "GET", path, params=params, timeout=httpx.Timeout(30, read=None)
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    self.check(response)
                yield from response.iter_lines()
        except httpx.TransportError as exc:
            raise Unreachable(f"lost the API at {self.url}: {exc}") from None
        except httpx.HTTPError as exc:
            raise CliError(f"lost the API at {self.url}: {exc}") from None

    @staticmethod
    def check(response: Any) -> None:
        if response.status_code < 400:
            return
        try:
            body = printable(response.json())  # errors are for people, whatever -o says
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("errors"), list):
            from compiler.errors import ErrorDetail, ManifestError

            raise ManifestError(
                [
                    ErrorDetail(
                        str(e.get("path", "")),
                        str(e.get("message", "")),
                        _position(e.get("line")),
                        _position(e.get("column")),
                    )
                    for e in body["errors"]
                    if isinstance(e, dict)
                ]
            )
        error = body.get("error") if isinstance(body, dict) else None
        kind = Unreachable if response.status_code in (502, 503, 504) else CliError
        if isinstance(error, dict) and "message" in error:
            raise kind(f"{error['message']} ({response.status_code} {error.get('code', '')})")
        raise kind(f"the API answered {response.status_code} {response.reason_phrase}")

    def state(self, run_id: str, *, outputs: bool = False) -> dict[str, Any]:
        params: dict[str, Any] = {"stepsLimit": STEPS_PAGE}
        if outputs:
            params["include"] = "outputs"
        state: dict[str, Any] = self.call("GET", f"/runs/{run_id}", params=params)
        return state

    def download(self, path: str) -> Iterator[bytes]:
        import httpx

        try:
            with self.http.stream("GET", path) as response:
                if response.status_code >= 400:
                    response.read()
                    self.check(response)
                yield from response.iter_bytes()
        except httpx.TransportError as exc:
            raise Unreachable(f"lost the API at {self.url}: {exc}") from None
        except httpx.HTTPError as exc:
            raise CliError(f"lost the API at {self.url}: {exc}") from None

    def failures(self, run_id: str) -> dict[str, str]:
        """Each failed step's message, from its last `step.failed` log entry."""
        found: dict[str, str] = {}
        for line in self.stream_lines(f"/runs/{run_id}/logs", {}):
            if '"step.failed"' not in line:
                continue
            entry = printable(json.loads(line))  # shown to people only
            if entry.get("eventType") == "step.failed" and entry.get("stepId"):
                found[entry["stepId"]] = entry.get("message", "")
        return found


STDERR_LINES = 5


def why_lines(state: dict[str, Any], messages: dict[str, str]) -> list[str]:
    """Why each failed step failed: the executor's message, the exit code, the end of stderr."""
    out: list[str] = []
    for step in state["steps"]:
        if step["status"] != "Failed":
            continue
        outputs = step.get("outputs") or {}
        message = messages.get(step["stepId"]) or step.get("statusReason") or "failed"
        out.append(f"  {step['stepId']} failed: {message}")
        if "exitCode" in outputs:
            out.append(f"    exit code {outputs['exitCode']}")
        stderr = outputs.get("stderr")
        if isinstance(stderr, str) and stderr.strip():
            tail = stderr.rstrip("\n").splitlines()[-STDERR_LINES:]
            out.append(f"    stderr (last {len(tail)} lines):")
            out.extend(f"      {line}" for line in tail)
    return out


def explain(api: Api, run_id: str, state: dict[str, Any]) -> list[str]:
    """`why_lines` for a run with failed steps (fetching their outputs and messages), else []."""
    if not any(s["status"] == "Failed" for s in state["steps"]):
        return []
    return why_lines(api.state(run_id, outputs=True), api.failures(run_id))


# ----------------------------------------------------------------- commands


def create_command(args: argparse.Namespace) -> int:
    body: dict[str, Any] = pack_source(args.pack)
    if args.inputs:
        body["inputs"] = _inputs(args.inputs)
    if args.run_id:
        body["runId"] = args.run_id
    api = Api(args)
    with located_in(args.pack if "manifest" in body else None):
        state = api.call("POST", "/runs", json=body)
    if not args.wait:
        print(state["runId"])
        return EXIT_OK
    return follow(api, state["runId"], sys.stdout)


def list_command(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CliError("--limit must be at least 1")
    api = Api(args)
    runs: list[dict[str, Any]] = []
    params: dict[str, Any] = {"pageSize": min(args.limit, 500)}
    if args.status:
        params["status"] = args.status
    if args.pack:
        params["pack"] = args.pack
    while len(runs) < args.limit:
        page = api.call("GET", "/runs", params=params)
        runs += page["runs"]
        if not page.get("nextPageToken"):
            break
        params["pageToken"] = page["nextPageToken"]
    runs = runs[: args.limit]
    if args.output in ("json", "yaml"):
        dump(runs, args.output)
        return EXIT_OK
    # Columns are only ever appended, so scripts that split lines keep their fields.
    headers = ["RUN ID", "STATUS", "PACK", "CREATED", "CLOSED", "DURATION"]
    if args.output == "wide":
        headers += ["VERSION", "PLAN HASH", "REDRIVE OF"]
    rows = []
    for r in runs:
        row = [
            r["runId"],
            r["status"],
            r["pack"],
            r["createdAt"],
            r.get("closedAt") or "-",
            duration(r["createdAt"], r.get("closedAt")),
        ]
        if args.output == "wide":
            row += [r.get("packVersion") or "-", r["planHash"], r.get("redriveOf") or "-"]
        rows.append(row)
    table(headers, rows)
    return EXIT_OK


def show_command(args: argparse.Namespace) -> int:
    api = Api(args)
    if args.watch:
        if args.output in ("json", "yaml"):
            raise CliError(f"--watch draws the tree: -o {args.output} prints the state once")
        return follow(api, args.run_id, sys.stdout, wide=args.output == "wide")
    state = api.state(args.run_id)
    if args.output in ("json", "yaml"):
        dump(state, args.output)
    else:
        wide = args.output == "wide"
        why = explain(api, args.run_id, state)
        if sys.stdout.isatty():
            console().print(tree_view(state, symbols(sys.stdout), why, wide=wide))
        else:
            print("\n".join(render(state, symbols(sys.stdout), wide=wide) + why))
    return exit_code(state["status"])


def artifacts_command(args: argparse.Namespace) -> int:
    api = Api(args)
    listed: list[dict[str, Any]] = api.call("GET", f"/runs/{args.run_id}/artifacts")
    if args.name is None:
        # Without NAME there is nothing to download: -o is the listing's format, as on every
        # other list command (with NAME it stays the file to write).
        fmt = "json" if args.json else args.output
        if fmt in ("json", "yaml"):
            dump(listed, fmt)
            return EXIT_OK
        if fmt not in (None, "wide"):
            raise CliError(f"-o {fmt}: without NAME, -o is the format: json, yaml or wide")
        headers = ["NAME", "TYPE", "STATUS", "CAPTURED", "NOTES"]
        if fmt == "wide":
            headers[4:4] = ["SOURCE"]
        rows = []
        for a in listed:
            row = [a["name"], a["type"], a["status"], a.get("capturedAt") or "-"]
            if fmt == "wide":
                row.append(a.get("sourcePath") or a.get("expressionJson") or "-")
            rows.append([*row, a.get("notes") or ""])
        table(headers, rows)
        return EXIT_OK
    named = [a for a in listed if a["name"] == args.name]
    if not named:
        names = ", ".join(sorted({a["name"] for a in listed})) or "none"
        raise CliError(f"run {args.run_id} has no artifact {args.name!r} (it has: {names})")
    record = named[-1]
    if record["type"] == "object":
        print(record.get("expressionJson") or "null")
        return EXIT_OK
    target = args.output or Path(args.name).name
    written = 0
    out: Any = sys.stdout.buffer if target == "-" else None
    try:
        with contextlib.ExitStack() as stack:
            for chunk in api.download(f"/runs/{args.run_id}/artifacts/{quote(args.name, safe='')}"):
                if out is None:
                    out = stack.enter_context(open(target, "wb"))
                out.write(chunk)
                written += len(chunk)
    except OSError as exc:
        raise CliError(f"cannot write {target}: {exc.strerror or exc}") from None
    if target != "-":
        print(f"{args.name}: {written} bytes written to {target}", file=sys.stderr)
    return EXIT_OK


def logs_command(args: argparse.Namespace) -> int:
    """Print the log; with `--follow`, until the run ends, picking up where it left off (`after`)
    when the stream is cut short (an API restart, the run unreadable for a while)."""
    api = Api(args)
    after = 0
    retrying = Retrying()
    while True:
        params: dict[str, Any] = {"after": after}
        if args.follow:
            params["follow"] = "true"
        try:
            for line in api.stream_lines(f"/runs/{args.run_id}/logs", params):
                if not line.strip():
                    continue
                item = json.loads(line)
                if "sequence" not in item and isinstance(item.get("error"), dict):
                    # The stream's own last line: it ended before the run did.
                    error = item["error"]
                    after = int(error.get("resumeAfter", after))
                    raise Unreachable(f"{error.get('message')} ({error.get('code')})")
                after = item["sequence"]
                retrying.reset()
                text = json_text(item) if args.output else log_line(printable(item))
                print(text, flush=True)
            return EXIT_OK
        except Unreachable as exc:
            if not args.follow:
                raise
            retrying.wait(exc, f"resuming after entry {after}")


class Retrying:
    """A follower's patience: tries again every RETRY_SECONDS for RESUME_FOR_SECONDS in a row."""

    def __init__(self) -> None:
        self.since: float | None = None

    def reset(self) -> None:
        self.since = None

    def wait(self, problem: Exception, doing: str) -> None:
        now = time.monotonic()
        self.since = self.since or now
        if now - self.since > RESUME_FOR_SECONDS:
            raise CliError(f"gave up after {RESUME_FOR_SECONDS:g}s: {problem}") from None
        print(f"taskrunner: {problem}; {doing}", file=sys.stderr, flush=True)
        time.sleep(RETRY_SECONDS)


def approve_command(args: argparse.Namespace) -> int:
    api = Api(args)
    state = api.call("GET", f"/runs/{args.run_id}", params={"stepsLimit": 1})
    decision = "rejected" if args.reject else "approved"
    body: dict[str, Any] = {"decision": decision, "planHash": state["planHash"]}
    if args.summary:
        body["summary"] = args.summary
    outcome = api.call("POST", f"/runs/{args.run_id}/approvals/{args.approval_id}", json=body)
    tally = ""
    if outcome.get("requiredApprovals"):
        tally = f" ({outcome.get('approvals', 0)} of {outcome['requiredApprovals']})"
    resumed = "; the run resumes" if outcome.get("resumed") else ""
    needs = f"; still needs {', '.join(outcome['missing'])}" if outcome.get("missing") else ""
    print(f"{args.approval_id}: {outcome['status']}{tally}{resumed}{needs}")
    return EXIT_OK


def cancel_command(args: argparse.Namespace) -> int:
    Api(args).call("POST", f"/runs/{args.run_id}/cancel")
    print(f"{args.run_id}: cancel requested")
    return EXIT_OK


# ----------------------------------------------------------------- the step tree


def exit_code(status: str) -> int:
    return EXIT_ERROR if status in ("failed", "cancelled") else EXIT_OK


def symbols(stream: TextIO) -> dict[str, str]:
    """Unicode symbols where the stream can show them, ASCII elsewhere."""
    try:
        "".join(SYMBOLS.values()).encode(stream.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return ASCII_SYMBOLS
    return SYMBOLS


def step_symbol(step: dict[str, Any], marks: dict[str, str]) -> str:
    if step["status"] == "Pending" and step.get("statusReason") == "awaiting-approval":
        return marks["awaiting"]
    return marks.get(step["status"], "?")


def step_text(step: dict[str, Any], marks: dict[str, str]) -> str:
    text = f"{step_symbol(step, marks)} {step['stepId']}  {step['status']}"
    if step.get("statusReason"):
        text += f" ({step['statusReason']})"
    if step.get("attempts", 0) > 1:
        text += f", attempt {step['attempts']}"
    return text


def run_duration(state: dict[str, Any]) -> str | None:
    """How long the run has taken: to its last update once ended, to now while it goes on."""
    if not state.get("createdAt"):
        return None
    ended = state.get("updatedAt") if state["status"] in TERMINAL else None
    return duration(state["createdAt"], ended)


def header_text(state: dict[str, Any]) -> str:
    text = f"run {state['runId']}  {state['pack']}@{state['packVersion']}  {state['status']}"
    took = run_duration(state)
    return f"{text}  {took}" if took else text


def wide_text(step: dict[str, Any]) -> str:
    """What `-o wide` adds to a step: its kind, and when its status last changed."""
    return f"  [{step.get('kind', '?')}, since {step.get('lastTransitionAt') or '-'}]"


def footer_lines(state: dict[str, Any]) -> list[str]:
    """What the run waits for (and the command to decide it), or why it ended."""
    footer = []
    for approval in state.get("approvals", []):
        # A run that has ended (even one Temporal cut off) offers no decision to make.
        if approval["status"] == "pending" and state["status"] not in TERMINAL:
            votes = sum(1 for d in approval.get("decisions", []) if d["decision"] == "approved")
            needs = f", needs {', '.join(approval['missing'])}" if approval.get("missing") else ""
            footer.append(
                f"  waiting for approval {approval['approvalId']} "
                f"({votes} of {approval['requiredApprovals']}{needs}): "
                f"taskrunner runs approve {state['runId']} {approval['approvalId']}"
            )
        elif approval["status"] == "cancelled" and approval.get("stepId"):
            footer.append(f"  approval {approval['approvalId']} cancelled: the run ended")
    if state.get("error"):
        footer.append(f"  error: {state['error']}")
    return footer


def visible_steps(
    state: dict[str, Any], footer: int, max_lines: int | None
) -> tuple[list[tuple[int, dict[str, Any]]], int]:
    """(depth, step) of the steps to draw, and how many are left out: the steps not fetched,
    and those past `max_lines` (a terminal's height, counting header and footer)."""
    depth: dict[str, int] = {}
    shown = []
    for step in state["steps"]:
        parent = step.get("parentId")
        depth[step["stepId"]] = depth.get(parent, -1) + 1 if parent else 0
        shown.append((depth[step["stepId"]], step))
    hidden = state.get("totalSteps", len(shown)) - len(shown)
    if max_lines is not None and 1 + len(shown) + footer + 1 > max_lines:
        keep = max(max_lines - 1 - footer - 1, 1)
        hidden += len(shown) - keep
        shown = shown[:keep]
    return shown, hidden


def render(
    state: dict[str, Any],
    marks: dict[str, str],
    max_lines: int | None = None,
    *,
    wide: bool = False,
) -> list[str]:
    """The run as plain lines, for a pipe: a header, the step tree (indented by parentId), what
    it waits for. Stable: scripts and tests read it."""
    footer = footer_lines(state)
    shown, hidden = visible_steps(state, len(footer), max_lines)
    tree = [
        "  " * (depth + 1) + step_text(step, marks) + (wide_text(step) if wide else "")
        for depth, step in shown
    ]
    if hidden > 0:
        tree.append(f"  ... {hidden} more steps")
    lines = [header_text(state)]
    if wide:
        lines.append(f"  planHash {state.get('planHash', '-')}, created {state.get('createdAt')}")
    return lines + tree + footer


def tree_view(
    state: dict[str, Any],
    marks: dict[str, str],
    why: Sequence[str] = (),
    max_lines: int | None = None,
    *,
    wide: bool = False,
) -> Any:
    """The run for a terminal, drawn by rich: the steps as a tree with guide lines, statuses in
    colour, then what it waits for and why steps failed."""
    from rich.console import Group
    from rich.text import Text
    from rich.tree import Tree

    footer = footer_lines(state)
    shown, hidden = visible_steps(state, len(footer) + len(why), max_lines)
    header = Text(f"run {state['runId']}  ", style="bold")
    header.append(f"{state['pack']}@{state['packVersion']}  ")
    header.append(state["status"], style=STATUS_STYLES.get(state["status"], "bold"))
    took = run_duration(state)
    if took:
        header.append(f"  {took}", style="dim")
    if wide:
        header.append(f"\nplanHash {state.get('planHash', '-')}", style="dim")
    root = Tree(header, guide_style="dim")
    nodes: dict[str, Any] = {}
    for _, step in shown:
        label = Text(f"{step_symbol(step, marks)} ", style=STATUS_STYLES.get(step["status"], ""))
        label.append(step["stepId"], style="bold")
        label.append("  " + step_text(step, marks).split("  ", 1)[1])
        if wide:
            label.append(wide_text(step), style="dim")
        parent = nodes.get(step.get("parentId") or "", root)
        nodes[step["stepId"]] = parent.add(label)
    if hidden > 0:
        root.add(Text(f"... {hidden} more steps", style="dim"))
    rest = [Text(line, style="yellow") for line in footer] + [
        Text(line, style="red") for line in why
    ]
    return Group(root, *rest)


def follow(api: Api, run_id: str, out: TextIO, *, wide: bool = False) -> int:
    """Keep the run's tree current until it ends; its final status decides the exit code. On a
    terminal rich redraws it in place (cut to the window's height); piped, the tree is printed
    once, then one line per change."""
    marks = symbols(out)
    if out.isatty():
        return follow_live(api, run_id, out, marks, wide=wide)
    seen: dict[str, tuple[str, str | None]] = {}
    status = ""
    for state in polled_states(api, run_id):
        if not seen:
            out.write("\n".join(render(state, marks, wide=wide)) + "\n")
        else:
            for step in state["steps"]:
                now = (step["status"], step.get("statusReason"))
                if seen.get(step["stepId"]) != now:
                    out.write(step_text(step, marks) + "\n")
            if state["status"] != status and state["status"] not in TERMINAL:
                out.write(f"run {run_id}: {state['status']}\n")
        out.flush()
        seen = {s["stepId"]: (s["status"], s.get("statusReason")) for s in state["steps"]}
        status = state["status"]
    why = explain(api, run_id, state)
    out.write("\n".join([f"run {run_id}: {status}", *why]) + "\n")
    return exit_code(status)


def polled_states(api: Api, run_id: str) -> Iterator[dict[str, Any]]:
    """The run's state every POLL_SECONDS, the last one its final state; an API or run out of
    reach is tried again (for RESUME_FOR_SECONDS in a row) rather than taken for an end."""
    retrying = Retrying()
    while True:
        try:
            state = api.state(run_id)
        except Unreachable as exc:
            retrying.wait(exc, "trying again")
            continue
        retrying.reset()
        yield state
        if state["status"] in TERMINAL:
            return
        time.sleep(POLL_SECONDS)


def follow_live(
    api: Api, run_id: str, out: TextIO, marks: dict[str, str], *, wide: bool = False
) -> int:
    from rich.live import Live

    screen = console(out)
    with Live(console=screen, auto_refresh=False, transient=False) as live:
        for state in polled_states(api, run_id):
            ended = state["status"] in TERMINAL
            why = explain(api, run_id, state) if ended else []
            height = max(screen.size.height - 1, 5)
            live.update(tree_view(state, marks, why, max_lines=height, wide=wide), refresh=True)
    screen.print(f"run {run_id}: {state['status']}")
    return exit_code(state["status"])


def log_line(entry: dict[str, Any]) -> str:
    where = entry.get("stepId") or "-"
    return (
        f"{entry['timestamp']}  {entry['level']:<5}  {entry['eventType']:<22}  {where}  "
        f"{entry['message']}"
    )


# ----------------------------------------------------------------- inputs


PACK_REF = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(@(?P<version>[A-Za-z0-9][\w.+-]*))?$")


def pack_source(value: str) -> dict[str, Any]:
    """`{"manifest": ...}` for a file (or -), `{"pack": {name, version?}}` for NAME[@VERSION]."""
    match = PACK_REF.match(value)
    if value == "-" or Path(value).exists() or match is None:
        return {"manifest": _read_pack(value)}
    ref = {"name": match["name"]}
    if match["version"]:
        ref["version"] = match["version"]
    return {"pack": ref}


def redrive_command(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    if args.from_step:
        body["fromStep"] = args.from_step
    if args.inputs:
        body["inputs"] = _inputs(args.inputs)
    if args.pack_version:
        body["pack"] = {"version": args.pack_version}
    if args.new_run_id:
        body["runId"] = args.new_run_id
    api = Api(args)
    params = {"dryRun": "true"} if args.dry_run else None
    try:
        answer = api.call("POST", f"/runs/{args.run_id}/redrive", json=body, params=params)
        if not args.wait or args.dry_run:
            api.http.close()
    except CliError:
        api.http.close()
        raise
    if args.dry_run:
        changed = " (changed: every gate is decided again)" if answer["planHashChanged"] else ""
        print(f"redrive of {answer['redriveOf']} from step {answer['restartFrom']}")
        print(f"  planHash  {answer['planHash']}{changed}")
        print(f"  reused    {', '.join(answer['reusedSteps']) or '-'}")
        print(f"  re-run    {', '.join(answer['rerunSteps']) or '-'}")
        print(f"  gates decided again  {', '.join(answer['gatesLapsed']) or '-'}")
        print(f"  approvals carried    {', '.join(answer['approvalsCarried']) or '-'}")
        return EXIT_OK
    if not args.wait:
        print(answer["runId"])
        return EXIT_OK
    return follow(api, answer["runId"], sys.stdout)


def _position(value: Any) -> int | None:
    """A PlanErrorResponse item's `line` or `column`, when the service sent a sane one."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


@contextlib.contextmanager
def located_in(pack: str | None) -> Iterator[None]:
    """The API's manifest errors for the pack file `pack` print as `FILE:LINE:COLUMN: ...`, as
    `taskrunner validate` prints them (`<stdin>` for -)."""
    from compiler.errors import ManifestError

    try:
        yield
    except ManifestError as exc:
        if pack is not None:
            exc.source = "<stdin>" if pack == "-" else pack
        raise


def _read_pack(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None


def _inputs(value: str) -> dict[str, Any]:
    """`--inputs`: a JSON object given inline, or a JSON or YAML file holding one."""
    import yaml

    if value.lstrip().startswith("{"):
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            raise CliError(f"--inputs is not valid JSON: {exc}") from None
    else:
        try:
            parsed = yaml.safe_load(Path(value).read_text())
        except OSError as exc:
            raise CliError(f"cannot read {value}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise CliError(f"{value} is not JSON or YAML: {exc}") from None
    if not isinstance(parsed, dict):
        raise CliError("--inputs must be an object of input names to values")
    return parsed
