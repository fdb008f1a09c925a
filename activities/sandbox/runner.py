"""Run one command of a step inside the sandbox, with the step's limits, and leave nothing behind.

`CommandRunner.run` is the one way an executor starts a process (`ExecutorContext.run_command`
wraps it). Inside, the command sees:

- `/usr`, `/bin`, `/lib*`, `/sbin`, `/etc` read-only; the run's workspace read-write at
  `/workspace` (its only writable place besides a `tmp_mib` tmpfs at `/tmp`); its files at
  `/run/taskrunner/files/<name>`; its own `/proc` and a minimal `/dev`. Nothing else of the
  host: not other runs, tenants, the artifact store, the worker's code, data or sockets;
- its own user (uid 65534, no capabilities, no nested user namespaces), PID, IPC, UTS and
  cgroup namespaces, so `/proc/1` is the sandbox's init and the worker is invisible;
- only the environment it was given (bwrap itself is started with exactly that environment, so
  even `/proc/1/environ` holds nothing else);
- `mode: sealed`: its own network namespace (loopback only). With an `egressAllowlist`, the
  worker's allowlisting proxy, reached as `http://127.0.0.1:3128` (see `egress.py`);
  `mode: open`: the host's network.

Limits: memory, CPU share and process count by the step's cgroup; CPU time (the whole tree's,
from the cgroup) and wall time watched here; workspace size watched here, with RLIMIT_FSIZE
capping any one file at the same size. When the command ends, times out or is cancelled, every
process in the step's cgroup is killed and the cgroup removed.

With `TASKRUNNER_SANDBOX=off` the command runs as a plain subprocess (own session, rlimits,
process group killed at the end) and every step's stderr starts with a warning saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from activities.netpolicy import TargetPolicy
from activities.sandbox.cgroups import CgroupUnavailable, Limits, StepCgroup
from activities.sandbox.egress import EgressProxy
from activities.sandbox.host import HostSandbox, host_sandbox, system_binds
from compiler.plan import Sandbox

# The failure reasons naming the limit a step broke are the workflow's contract: re-exported here
# for executors.
from workflows.contract.activities import (
    CPU_TIME_LIMIT,
    DISK_LIMIT,
    EGRESS_DENIED,
    MEMORY_LIMIT,
    PIDS_LIMIT,
    SANDBOX_UNAVAILABLE,
    TIMEOUT,
)

WORKSPACE = "/workspace"
FILES_DIR = "/run/taskrunner/files"
PROXY_PORT = 3128
_PROXY_SOCKET = "/run/taskrunner/proxy.sock"
_FORWARDER = "/run/taskrunner/forwarder.py"
_SANDBOX_UID = "65534"
_WATCH_SECONDS = 0.1
_DISK_EVERY = 3
_MIB = 1024 * 1024
_PR_SET_PDEATHSIG = 1
_CANNOT_JOIN = signal.SIGUSR2
_JOIN_ATTEMPTS = 3

OFF_WARNING = (
    "WARNING: TASKRUNNER_SANDBOX=off: this step ran WITHOUT isolation, as the worker's user, "
    "with the worker's files and network in reach.\n"
)


class SandboxUnavailable(Exception):
    """The step needs isolation this host cannot give; nothing was run."""


class _GroupVanished(Exception):
    """The step's cgroup was removed before the command joined it: nothing ran."""


@dataclass(frozen=True)
class SandboxSettings:
    """The operator's sandbox settings (from the worker's settings)."""

    enabled: bool = True
    pids_max: int = 512
    disk_mib: int = 1024
    tmp_mib: int = 64
    bwrap: str | None = None
    egress: TargetPolicy = field(default_factory=TargetPolicy)
    """Where the egress proxy may connect besides the allowlist's say (internal addresses)."""


@dataclass
class CommandResult:
    """How a command ended. `limit` names the limit it broke, if any (see the constants)."""

    returncode: int
    limit: str | None = None
    detail: str = ""
    cpu_seconds: float = 0.0
    denied: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Command:
    """One command of a step and what `CommandRunner.run` was given for it."""

    argv: Sequence[str]
    workspace: Path
    cwd: Path
    env: Mapping[str, str]
    sandbox: Sandbox
    timeout: float
    stdout: IO[bytes]
    stderr: IO[bytes]
    files: Mapping[str, bytes]


@dataclass
class CommandRunner:
    """Runs commands for steps: sandboxed, unless the operator turned the sandbox off."""

    settings: SandboxSettings = field(default_factory=SandboxSettings)
    host: HostSandbox | None = None

    def __post_init__(self) -> None:
        if self.settings.enabled and self.host is None:
            self.host = host_sandbox(self.settings.bwrap)

    def workspace_view(self, workspace: Path) -> str:
        """Where the command sees the run workspace."""
        return WORKSPACE if self.settings.enabled else str(workspace)

    def check(self, sandbox: Sandbox) -> None:
        """SandboxUnavailable when this host cannot give `sandbox` what it asks for."""
        if not self.settings.enabled:
            return
        assert self.host is not None
        if self.host.unavailable:
            raise SandboxUnavailable(self.host.unavailable)
        if sandbox.mode == "sealed" and sandbox.egressAllowlist and not self.host.python:
            raise SandboxUnavailable(
                "sandbox.egressAllowlist needs a system python3 under /usr for the forwarder"
            )

    async def run(
        self,
        argv: Sequence[str],
        *,
        workspace: Path,
        cwd: Path,
        env: Mapping[str, str],
        sandbox: Sandbox,
        timeout: float,
        stdout: IO[bytes],
        stderr: IO[bytes],
        files: Mapping[str, bytes] | None = None,
        scratch: Path,
        log: Callable[..., None] | None = None,
    ) -> CommandResult:
        """Run `argv` and wait for it and everything it started to end.

        `cwd` is a host path inside `workspace`; `files` are given to the command read-only at
        `FILES_DIR/<name>` (argv may name them there); `scratch` is a private folder of the
        worker's for the proxy socket. Raises SandboxUnavailable before starting anything when
        isolation cannot be had; FileNotFoundError/PermissionError when the sandbox is off and
        the program cannot be started.
        """
        self.check(sandbox)
        command = _Command(argv, workspace, cwd, env, sandbox, timeout, stdout, stderr, files or {})
        if not self.settings.enabled:
            return await self._run_bare(command, scratch)
        assert self.host is not None and self.host.cgroups is not None and self.host.bwrap
        marks = [_position(stdout), _position(stderr)]
        for attempt in range(1, _JOIN_ATTEMPTS + 1):
            try:
                return await self._run_in_group(command)
            except _GroupVanished:
                # Nothing ran: the launcher stops before exec when it cannot join the group,
                # typically because another worker on this host (an older version, which
                # removed every empty step group at start-up) took it away. A fresh group is
                # safe to try again.
                if attempt == _JOIN_ATTEMPTS:
                    raise SandboxUnavailable(
                        "the command could not join the step's cgroup (removed by another "
                        "process on this host?)"
                    ) from None
                for stream, mark in zip((stdout, stderr), marks, strict=True):
                    _rewind(stream, mark)
        raise AssertionError("unreachable")

    async def _run_in_group(self, command: _Command) -> CommandResult:
        sandbox = command.sandbox
        assert self.host is not None and self.host.cgroups is not None
        try:
            group = self.host.cgroups.create(
                Limits(
                    memory_mib=sandbox.memoryLimitMiB,
                    cpu_millicores=sandbox.cpuLimitMillicores,
                    pids=self.settings.pids_max,
                )
            )
        except CgroupUnavailable as exc:
            raise SandboxUnavailable(str(exc)) from None
        proxy: EgressProxy | None = None
        # The socket's folder is short-named in the worker's /tmp (a unix socket path has at
        # most 107 bytes) and private to the worker; the sandbox only gets the socket itself.
        sockets = tempfile.mkdtemp(prefix="tr-egress-")
        try:
            if sandbox.mode == "sealed" and sandbox.egressAllowlist:
                proxy = EgressProxy(
                    Path(sockets) / "proxy.sock",
                    tuple(sandbox.egressAllowlist),
                    self.settings.egress,
                )
                await proxy.__aenter__()
            return await self._run_sandboxed(command, group, proxy)
        finally:
            await asyncio.shield(asyncio.to_thread(group.remove))
            if proxy is not None:
                await proxy.__aexit__(None, None, None)
            with contextlib.suppress(OSError):
                os.rmdir(sockets)

    def _bwrap_argv(
        self,
        command: _Command,
        file_fds: Mapping[str, int],
        proxy: EgressProxy | None,
        forwarder_fd: int | None,
    ) -> list[str]:
        assert self.host is not None and self.host.bwrap
        workspace, sandbox = command.workspace, command.sandbox
        relative = command.cwd.relative_to(workspace).as_posix()
        inside_cwd = WORKSPACE if relative == "." else f"{WORKSPACE}/{relative}"
        args = [
            self.host.bwrap,
            "--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-uts",
            "--unshare-cgroup-try",
            "--disable-userns",
            "--uid", _SANDBOX_UID, "--gid", _SANDBOX_UID,
            "--hostname", "sandbox",
            "--die-with-parent", "--new-session",
            *system_binds(),
            "--proc", "/proc",
            "--dev", "/dev",
            "--size", str(self.settings.tmp_mib * _MIB), "--tmpfs", "/tmp",
            "--bind", str(workspace), WORKSPACE,
        ]  # fmt: skip
        if sandbox.mode == "sealed":
            args.append("--unshare-net")
        for name, fd in file_fds.items():
            args += ["--perms", "0444", "--ro-bind-data", str(fd), f"{FILES_DIR}/{name}"]
        argv = list(command.argv)
        if proxy is not None and forwarder_fd is not None:
            assert self.host.python
            args += ["--bind", str(proxy.socket_path), _PROXY_SOCKET]
            args += ["--perms", "0444", "--ro-bind-data", str(forwarder_fd), _FORWARDER]
            argv = [self.host.python, "-I", "-S", _FORWARDER, str(PROXY_PORT), _PROXY_SOCKET,
                    "--", *argv]  # fmt: skip
        # The sandbox's root is bwrap's own tmpfs: read-only once everything is mounted, so the
        # workspace and /tmp are the only writable places.
        args += ["--remount-ro", "/", "--chdir", inside_cwd, "--", *argv]
        return args

    async def _run_sandboxed(
        self, command: _Command, group: StepCgroup, proxy: EgressProxy | None
    ) -> CommandResult:
        sandbox, stderr = command.sandbox, command.stderr
        env = dict(command.env)
        if proxy is not None:
            url = f"http://127.0.0.1:{PROXY_PORT}"
            for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
                env[name] = env[name.lower()] = url
        # Files reach bwrap through pipes, never through the disk: a script may hold secrets.
        payloads = dict(command.files)
        if proxy is not None:
            payloads["\0forwarder"] = (Path(__file__).parent / "forwarder.py").read_bytes()
        fds: dict[str, int] = {}
        writers: list[tuple[int, bytes]] = []
        try:
            for name, data in payloads.items():
                read_fd, write_fd = os.pipe()
                fds[name] = read_fd
                writers.append((write_fd, data))
            file_fds = {k: v for k, v in fds.items() if k != "\0forwarder"}
            forwarder_fd = fds.get("\0forwarder")
            args = self._bwrap_argv(command, file_fds, proxy, forwarder_fd)
            disk_bytes = self.settings.disk_mib * _MIB
            launcher = _launcher(sandbox, disk_bytes, group.join_paths)
            try:
                proc = await asyncio.create_subprocess_exec(
                    *(launcher + args if launcher else args),
                    stdin=subprocess.DEVNULL,
                    stdout=command.stdout,
                    stderr=stderr,
                    env=env,
                    pass_fds=list(fds.values()),
                    start_new_session=True,
                    preexec_fn=None
                    if launcher
                    else _child_setup(sandbox, disk_bytes, group.join_paths, cap_memory=False),
                )
            except subprocess.SubprocessError:
                # The preexec_fn failed, so nothing was started: for want of the group?
                if not all(folder.is_dir() for folder in group.folders):
                    raise _GroupVanished from None
                raise
        finally:
            for fd in fds.values():
                os.close(fd)
        # Feed the pipes off the event loop: bwrap reads them while it sets up.
        if writers:
            await asyncio.to_thread(_feed, writers)
        result = CommandResult(returncode=0)
        try:
            await self._watch(
                proc, group, sandbox, command.timeout, command.workspace, disk_bytes, result
            )
        except BaseException:
            # Cancelled: shielded, so a second cancellation cannot leave processes running.
            await asyncio.shield(_end(proc, group))
            raise
        await _end(proc, group)
        assert proc.returncode is not None
        if proc.returncode == -_CANNOT_JOIN:
            # The launcher's own signal, before it became bwrap: nothing of the step ran (a
            # command's exit status reaches us through bwrap as a code, never as a signal).
            raise _GroupVanished
        result.returncode = proc.returncode
        usage = group.usage()
        result.cpu_seconds = usage.cpu_seconds
        if proxy is not None:
            result.denied = list(dict.fromkeys(proxy.denied))
            # Said in the step's own log even when the command shrugged the refusal off: a
            # tool that silently fell back is easier to fix when the log says why.
            for refused in result.denied:
                stderr.write(f"taskrunner: egress-denied: the proxy refused {refused}\n".encode())
            stderr.flush()
        if result.limit is None:
            result.limit, result.detail = _classify(
                result.returncode,
                usage.oom_kills,
                usage.pids_refused,
                usage.cpu_seconds,
                sandbox,
                result.denied,
                self.settings,
            )
        return result

    async def _watch(
        self,
        proc: asyncio.subprocess.Process,
        group: StepCgroup,
        sandbox: Sandbox,
        timeout: float,
        workspace: Path,
        disk_bytes: int,
        result: CommandResult,
    ) -> None:
        started = time.monotonic()
        tick = 0
        while True:
            try:
                await asyncio.wait_for(proc.wait(), _WATCH_SECONDS)
                return
            except TimeoutError:
                pass
            tick += 1
            usage = group.usage()
            if usage.cpu_seconds > sandbox.quotaSeconds:
                result.limit = CPU_TIME_LIMIT
                result.detail = (
                    f"the step's processes used {usage.cpu_seconds:.1f}s of CPU time, more "
                    f"than sandbox.quotaSeconds ({sandbox.quotaSeconds}s)"
                )
            elif not math.isinf(timeout) and time.monotonic() - started > timeout:
                result.limit = TIMEOUT
                result.detail = f"the step ran longer than its timeout ({timeout:g}s)"
            elif tick % _DISK_EVERY == 0:
                used = await asyncio.to_thread(_disk_usage, workspace)
                if used > disk_bytes:
                    result.limit = DISK_LIMIT
                    result.detail = (
                        f"the run workspace grew to {used // _MIB} MiB, more than the worker's "
                        f"disk limit ({self.settings.disk_mib} MiB)"
                    )
            if result.limit is not None:
                await _end(proc, group)
                return

    async def _run_bare(self, command: _Command, scratch: Path) -> CommandResult:
        sandbox, timeout, stderr = command.sandbox, command.timeout, command.stderr
        stderr.write(OFF_WARNING.encode())
        stderr.flush()
        with tempfile.TemporaryDirectory(prefix="files-", dir=scratch) as folder:
            for name, data in command.files.items():
                path = Path(folder) / name
                path.write_bytes(data)
                path.chmod(0o600)
            argv = [arg.replace(FILES_DIR + "/", folder + "/") for arg in command.argv]
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=command.stdout,
                stderr=stderr,
                cwd=command.cwd,
                env=dict(command.env),
                start_new_session=True,
                preexec_fn=_child_setup(sandbox, None, [], cap_memory=True),
            )
            result = CommandResult(returncode=0)
            try:
                try:
                    await asyncio.wait_for(proc.wait(), None if math.isinf(timeout) else timeout)
                except TimeoutError:
                    result.limit = TIMEOUT
                    result.detail = f"the step ran longer than its timeout ({timeout:g}s)"
            finally:
                _kill_group(proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await asyncio.shield(proc.wait())
        assert proc.returncode is not None
        result.returncode = proc.returncode
        if result.limit is None and proc.returncode == -signal.SIGXCPU:
            result.limit = CPU_TIME_LIMIT
            result.detail = f"the CPU time quota of {sandbox.quotaSeconds}s was used up"
        return result


async def _end(proc: asyncio.subprocess.Process, group: StepCgroup) -> None:
    """Kill every process of the step; bubblewrap's own last (see `StepCgroup.kill_all`)."""
    if proc.returncode is None:
        await asyncio.to_thread(group.kill_all, frozenset({proc.pid}))
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    await asyncio.to_thread(group.kill_all)


def _classify(
    returncode: int,
    oom_kills: int,
    pids_refused: int,
    cpu_seconds: float,
    sandbox: Sandbox,
    denied: list[str],
    settings: SandboxSettings,
) -> tuple[str | None, str]:
    """The limit a command broke, from what the cgroup and the proxy saw.

    A process killed for memory or a fork refused breaks a limit even when the command shrugs
    it off (a shell's `wait` does not report its children's deaths); an egress refusal only
    counts when the command then failed, since tools often probe for hosts they can do without.
    """
    signum = returncode - 128 if returncode > 128 else -returncode if returncode < 0 else 0
    if oom_kills:
        return MEMORY_LIMIT, (
            f"the step's processes needed more than sandbox.memoryLimitMiB "
            f"({sandbox.memoryLimitMiB} MiB); the kernel killed {oom_kills} of them"
        )
    if pids_refused:
        return PIDS_LIMIT, (
            f"the step tried to run more than {settings.pids_max} processes at once"
        )
    if returncode == 0:
        return None, ""
    if signum == signal.SIGXCPU or cpu_seconds >= sandbox.quotaSeconds:
        return CPU_TIME_LIMIT, (
            f"the step's processes used {cpu_seconds:.1f}s of CPU time, reaching "
            f"sandbox.quotaSeconds ({sandbox.quotaSeconds}s)"
        )
    if signum == signal.SIGXFSZ:
        return DISK_LIMIT, f"a file reached the worker's disk limit ({settings.disk_mib} MiB)"
    if denied:
        more = f" and {len(denied) - 5} more" if len(denied) > 5 else ""
        return EGRESS_DENIED, "the egress proxy refused " + ", ".join(denied[:5]) + more
    return None, ""


def _position(stream: IO[bytes]) -> int | None:
    try:
        stream.flush()
        return stream.tell() if stream.seekable() else None
    except (OSError, ValueError):
        return None


def _rewind(stream: IO[bytes], position: int | None) -> None:
    """Drop what a failed launch wrote (its own complaint) before the command runs again."""
    if position is None:
        return
    with contextlib.suppress(OSError, ValueError):
        stream.seek(position)
        stream.truncate()


def _feed(writers: list[tuple[int, bytes]]) -> None:
    for fd, data in writers:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except BrokenPipeError:
            pass
        finally:
            os.close(fd)


def _disk_usage(root: Path) -> int:
    """Bytes the files under `root` occupy (allocated blocks, so sparse files count as written)."""
    total = 0
    stack = [str(root)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
            except OSError:
                continue
    return total


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


# Joins the step's cgroup and sets the rlimits, then becomes bwrap: what `_child_setup` does,
# without a Python preexec_fn, which forces a full fork() of the worker (tens of ms for a
# large process) where a plain spawn is a vfork.
_LAUNCH = (
    'ulimit -c 0; ulimit -S -t "$2" && ulimit -H -t "$1" && ulimit -f "$3" || exit 125; shift 3; '
    'while [ "$1" != -- ]; do echo 0 > "$1" || '
    "{ echo 'taskrunner: cannot join the step cgroup' >&2; kill -s USR2 $$; exit 125; }; "
    "shift; done; "
    'shift; exec "$@"'
)


def _launcher(sandbox: Sandbox, file_bytes: int, cgroup_procs: list[str]) -> list[str]:
    """`setpriv --pdeathsig KILL -- /bin/sh -c LAUNCH ...`: the command prefix that starts
    bwrap inside the step's cgroup with its rlimits, dying with the worker; [] where setpriv
    (util-linux) is missing, and `_child_setup` does it instead."""
    setpriv = shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin")
    if setpriv is None or not os.path.exists("/bin/sh"):
        return []
    cpu_hard = _clamp(resource.RLIMIT_CPU, sandbox.quotaSeconds + 1)
    cpu_soft = min(sandbox.quotaSeconds, cpu_hard)
    blocks = _clamp(resource.RLIMIT_FSIZE, file_bytes) // 512
    return [
        setpriv, "--pdeathsig", "KILL", "--",
        "/bin/sh", "-c", _LAUNCH, "taskrunner-launch",
        str(cpu_hard), str(cpu_soft), str(blocks), *cgroup_procs, "--",
    ]  # fmt: skip


def _clamp(which: int, wanted: int) -> int:
    _, hard = resource.getrlimit(which)
    return wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)


def _child_setup(
    sandbox: Sandbox, file_bytes: int | None, cgroup_procs: list[str], *, cap_memory: bool
) -> Callable[[], None]:
    """The preexec_fn: join the step's cgroup, set rlimits, die with the worker.

    Everything is computed here, in the parent; the child only makes system calls. Limits are
    clamped to the worker's own hard limits (raising those would fail the spawn).
    """
    wanted: list[tuple[int, int, int]] = [(resource.RLIMIT_CORE, 0, 0)]
    # A per-process backstop for the cgroup's whole-tree CPU accounting: SIGXCPU at the quota,
    # SIGKILL a second later for a process that ignores it.
    wanted.append((resource.RLIMIT_CPU, sandbox.quotaSeconds, sandbox.quotaSeconds + 1))
    if file_bytes is not None:
        wanted.append((resource.RLIMIT_FSIZE, file_bytes, file_bytes))
    if cap_memory:
        size = sandbox.memoryLimitMiB * _MIB
        wanted.append((resource.RLIMIT_AS, size, size))
    limits: list[tuple[int, int, int]] = []
    for which, soft, hard in wanted:
        _, current_hard = resource.getrlimit(which)
        if current_hard != resource.RLIM_INFINITY:
            hard = min(hard, current_hard)
        limits.append((which, min(soft, hard), hard))
    prctl = _prctl()
    parent = os.getpid()

    def apply() -> None:
        # "0" is the writing process itself, in v1 and v2 alike.
        for path in cgroup_procs:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
        for which, soft, hard in limits:
            resource.setrlimit(which, (soft, hard))
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # the worker died before prctl took effect
                os._exit(1)

    return apply


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn: Callable[..., int] = libc.prctl
    except (OSError, AttributeError):
        return None
    return fn


def describe(result: CommandResult) -> str:
    """`<limit>: <detail>` for a result that broke a limit."""
    return f"{result.limit}: {result.detail}" if result.limit else ""


__all__: list[Any] = [
    "CPU_TIME_LIMIT",
    "DISK_LIMIT",
    "EGRESS_DENIED",
    "MEMORY_LIMIT",
    "PIDS_LIMIT",
    "SANDBOX_UNAVAILABLE",
    "TIMEOUT",
    "CommandResult",
    "CommandRunner",
    "SandboxSettings",
    "SandboxUnavailable",
    "describe",
]
