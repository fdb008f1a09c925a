"""Control groups for sandboxed steps: one group per step, holding its whole process tree.

Two backends, chosen by what the host gives:

- **cgroup v2** (a delegated subtree): the worker's own group, found in `/proc/self/cgroup`
  (`0::/path`) under the cgroup2 mount, must offer the `memory`, `cpu` and `pids` controllers.
  Because v2 forbids processes in a group whose controllers are handed to children, the worker
  first moves the processes of its own group into a `worker` leaf, then creates
  `<own>/taskrunner/<step>` groups. Limits: `memory.max` (+ `memory.swap.max = 0`), `cpu.max`,
  `pids.max`; accounting from `cpu.stat`, `memory.events`, `pids.events`; `cgroup.kill` ends
  everything at once.
- **cgroup v1** (each controller its own hierarchy, as on hybrid hosts): a step gets
  `<own>/taskrunner/<step>` in each of `memory`, `cpu`, `cpuacct` and `pids` (co-mounted
  hierarchies share one folder). Limits: `memory.limit_in_bytes` (and `memsw` when swap
  accounting is on), `cpu.cfs_quota_us`, `pids.max`; accounting from `cpuacct.usage`,
  `memory.oom_control` (`oom_kill`), `pids.events`; ending everything is a SIGKILL loop over
  `cgroup.procs` (the step's PID namespace already ends its processes with its init; this is the
  backstop).

A child process joins the group by writing its pid to `cgroup.procs` before it execs (see
`StepCgroup.join_paths`), so nothing it forks can start outside the limits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

_V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids")
_V2_CONTROLLERS = ("memory", "cpu", "pids")
_PARENT = "taskrunner"
_CPU_PERIOD_US = 100_000
_MIB = 1024 * 1024
_LEGACY_STALE_SECONDS = 3600


class CgroupUnavailable(Exception):
    """The host gives no cgroup this worker can create and write; the message says why."""


@dataclass(frozen=True)
class Limits:
    """What one step may use. CPU is a share of cores (1000 millicores = one core)."""

    memory_mib: int
    cpu_millicores: int
    pids: int


@dataclass
class Usage:
    """What a step's group has used (or hit) so far."""

    cpu_seconds: float = 0.0
    oom_kills: int = 0
    pids_refused: int = 0


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _keyed(text: str, key: str) -> int:
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            with contextlib.suppress(ValueError):
                return int(value.strip())
    return 0


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _own_paths() -> dict[str, str]:
    """Controller (or "" for the v2 hierarchy) -> this process's group path in it."""
    paths: dict[str, str] = {}
    for line in _read(Path("/proc/self/cgroup")).splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, names, path = parts
        if not names:
            paths[""] = path
        for name in names.split(","):
            if name:
                paths[name] = path
    return paths


def _mounts() -> tuple[dict[str, tuple[Path, str]], tuple[Path, str] | None]:
    """v1 controller -> (mount point, mount root), and the cgroup2 (mount point, root)."""
    v1: dict[str, tuple[Path, str]] = {}
    v2: tuple[Path, str] | None = None
    for line in _read(Path("/proc/self/mountinfo")).splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        root, point = fields[3], Path(fields[4])
        fstype, options = rfields[0], rfields[2].split(",")
        if fstype == "cgroup2" and v2 is None:
            v2 = (point, root)
        elif fstype == "cgroup":
            for name in options:
                if name in _V1_CONTROLLERS:
                    v1.setdefault(name, (point, root))
    return v1, v2


def _inside(point: Path, root: str, own: str) -> Path:
    """The folder of group `own` under a mount of the hierarchy's `root`."""
    relative = os.path.relpath(own, root) if own.startswith(root) else own
    return (point / relative.lstrip("/")).resolve() if relative != "." else point


class CgroupBackend:
    """Creates, watches and removes the groups of steps. Build one with `detect()`."""

    version: str = ""

    def create(self, limits: Limits) -> StepCgroup:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@dataclass
class StepCgroup:
    """One step's group (a folder per hierarchy)."""

    version: str
    folders: list[Path]
    procs_folder: Path
    cpu_folder: Path
    memory_folder: Path
    pids_folder: Path
    removed: bool = field(default=False)

    @property
    def join_paths(self) -> list[str]:
        """The `cgroup.procs` files a child writes its pid to before exec."""
        return [str(folder / "cgroup.procs") for folder in self.folders]

    def usage(self) -> Usage:
        if self.version == "v2":
            return Usage(
                cpu_seconds=_keyed(_read(self.cpu_folder / "cpu.stat"), "usage_usec") / 1e6,
                oom_kills=_keyed(_read(self.memory_folder / "memory.events"), "oom_kill"),
                pids_refused=_keyed(_read(self.pids_folder / "pids.events"), "max"),
            )
        oom = _read(self.memory_folder / "memory.oom_control")
        kills = _keyed(oom, "oom_kill")
        if "oom_kill " not in oom:  # kernels before 4.13 only count limit hits
            kills = int(_read(self.memory_folder / "memory.failcnt").strip() or 0)
        cpu_ns = _read(self.cpu_folder / "cpuacct.usage").strip()
        return Usage(
            cpu_seconds=int(cpu_ns or 0) / 1e9,
            oom_kills=kills,
            pids_refused=_keyed(_read(self.pids_folder / "pids.events"), "max"),
        )

    def pids(self) -> list[int]:
        return [int(p) for p in _read(self.procs_folder / "cgroup.procs").split() if p.isdigit()]

    def kill_all(self, spare: frozenset[int] = frozenset()) -> None:
        """SIGKILL every process in the group but `spare`, until none is left (or 5 s passed).

        Sparing bubblewrap's own process lets it reap the sandbox's init, which reaps the rest
        as its PID namespace dies; killed first, it would leave them as zombies of the host's
        init, holding the group until that init gets round to reaping.
        """
        kill_file = self.procs_folder / "cgroup.kill"
        if self.version == "v2" and not spare and kill_file.exists():
            with contextlib.suppress(OSError):
                _write(kill_file, "1")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            pids = [pid for pid in self.pids() if pid not in spare]
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def remove(self) -> None:
        """Kill what is left and remove the folders (a group with processes cannot go)."""
        if self.removed:
            return
        self.kill_all()
        for folder in self.folders:
            for _ in range(250):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
        self.removed = True


class CgroupV1(CgroupBackend):
    version = "v1"

    def __init__(self, parents: dict[str, Path]) -> None:
        self.parents = parents

    def describe(self) -> str:
        return "cgroup v1 (" + ", ".join(f"{k}={v}" for k, v in sorted(self.parents.items())) + ")"

    def create(self, limits: Limits) -> StepCgroup:
        name = _step_name()
        folders: dict[Path, Path] = {}
        made: list[Path] = []
        try:
            for parent in self.parents.values():
                if parent not in folders:
                    folder = parent / name
                    folder.mkdir()
                    made.append(folder)
                    folders[parent] = folder
            by = {ctrl: folders[parent] for ctrl, parent in self.parents.items()}
            memory = by["memory"]
            _write(memory / "memory.limit_in_bytes", str(limits.memory_mib * _MIB))
            if (memory / "memory.memsw.limit_in_bytes").exists():
                # Swap would let a step hold more than its limit; with swap accounting on, the
                # limit covers memory and swap together.
                with contextlib.suppress(OSError):
                    _write(memory / "memory.memsw.limit_in_bytes", str(limits.memory_mib * _MIB))
            with contextlib.suppress(OSError):
                _write(memory / "memory.swappiness", "0")
            _write(by["cpu"] / "cpu.cfs_period_us", str(_CPU_PERIOD_US))
            quota = max(1000, limits.cpu_millicores * _CPU_PERIOD_US // 1000)
            _write(by["cpu"] / "cpu.cfs_quota_us", str(quota))
            _write(by["pids"] / "pids.max", str(limits.pids))
        except OSError as exc:
            for folder in made:
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise CgroupUnavailable(f"cannot set up the step's cgroup: {exc}") from None
        return StepCgroup(
            version="v1",
            folders=made,
            procs_folder=by["pids"],
            cpu_folder=by["cpuacct"],
            memory_folder=memory,
            pids_folder=by["pids"],
        )


class CgroupV2(CgroupBackend):
    version = "v2"

    def __init__(self, parent: Path) -> None:
        self.parent = parent

    def describe(self) -> str:
        return f"cgroup v2 ({self.parent})"

    def create(self, limits: Limits) -> StepCgroup:
        folder = self.parent / _step_name()
        try:
            folder.mkdir()
            _write(folder / "memory.max", str(limits.memory_mib * _MIB))
            with contextlib.suppress(OSError):
                _write(folder / "memory.swap.max", "0")
            quota = max(1000, limits.cpu_millicores * _CPU_PERIOD_US // 1000)
            _write(folder / "cpu.max", f"{quota} {_CPU_PERIOD_US}")
            _write(folder / "pids.max", str(limits.pids))
        except OSError as exc:
            with contextlib.suppress(OSError):
                folder.rmdir()
            raise CgroupUnavailable(f"cannot set up the step's cgroup: {exc}") from None
        return StepCgroup(
            version="v2",
            folders=[folder],
            procs_folder=folder,
            cpu_folder=folder,
            memory_folder=folder,
            pids_folder=folder,
        )


def _setup_v2(point: Path, root: str, own: str) -> CgroupV2:
    base = _inside(point, root, own)
    available = set(_read(base / "cgroup.controllers").split())
    missing = [c for c in _V2_CONTROLLERS if c not in available]
    if missing:
        raise CgroupUnavailable(f"cgroup v2 at {base} does not offer {', '.join(missing)}")
    enable = " ".join(f"+{c}" for c in _V2_CONTROLLERS)
    try:
        _write(base / "cgroup.subtree_control", enable)
    except OSError:
        # "No internal processes": hand the group's own processes (the worker's) to a leaf
        # first, then the controllers can be delegated to children.
        leaf = base / "worker"
        try:
            leaf.mkdir(exist_ok=True)
            for pid in _read(base / "cgroup.procs").split():
                with contextlib.suppress(ProcessLookupError):
                    _write(leaf / "cgroup.procs", pid)
            _write(base / "cgroup.subtree_control", enable)
        except OSError as exc:
            raise CgroupUnavailable(f"cgroup v2 at {base} is not delegated to us: {exc}") from None
    parent = base / _PARENT
    try:
        parent.mkdir(exist_ok=True)
        _write(parent / "cgroup.subtree_control", enable)
    except OSError as exc:
        raise CgroupUnavailable(f"cannot create {parent}: {exc}") from None
    _remove_stale(parent)
    return CgroupV2(parent)


def _setup_v1(mounts: dict[str, tuple[Path, str]], own: dict[str, str]) -> CgroupV1:
    missing = [c for c in _V1_CONTROLLERS if c not in mounts or c not in own]
    if missing:
        raise CgroupUnavailable(f"cgroup v1 lacks the {', '.join(missing)} controller(s)")
    parents: dict[str, Path] = {}
    for ctrl in _V1_CONTROLLERS:
        point, root = mounts[ctrl]
        parent = _inside(point, root, own[ctrl]) / _PARENT
        try:
            parent.mkdir(exist_ok=True)
            if ctrl == "memory":
                # Hierarchical accounting, so a step's limit covers all its descendants'
                # groups (always on in recent kernels; older ones need it set).
                with contextlib.suppress(OSError):
                    _write(parent / "memory.use_hierarchy", "1")
        except OSError as exc:
            raise CgroupUnavailable(f"cannot create {parent}: {exc}") from None
        parents[ctrl] = parent
    for parent in parents.values():
        _remove_stale(parent)
    return CgroupV1(parents)


def _step_name() -> str:
    """`step-<worker pid>-<random>`: whose group it is, so another worker leaves it alone."""
    return f"step-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def _remove_stale(parent: Path) -> None:
    """Remove the empty step groups of workers that are gone (a killed worker's leftovers).

    Several workers may share the parent (one host, one cgroup): a live worker's group is empty
    between its creation and its command joining it, and after its command ended but before
    its usage is read, so removing every empty group would pull one out from under a running
    step. Only groups whose worker is no longer running go (rmdir fails on a busy one anyway);
    groups named before the owner was part of the name go once they are an hour old.
    """
    for folder in parent.glob("step-*"):
        owner = folder.name.split("-")[1] if folder.name.count("-") == 2 else ""
        if owner.isdigit():
            if _alive(int(owner)):
                continue
        else:
            try:
                if time.time() - folder.stat().st_mtime < _LEGACY_STALE_SECONDS:
                    continue
            except OSError:
                continue
        with contextlib.suppress(OSError):
            folder.rmdir()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remount_writable(points: list[Path]) -> None:
    """Container runtimes mount the container's own cgroup read-only; a worker given
    CAP_SYS_ADMIN (docker-compose.yml) makes it writable, which only affects its own namespace."""
    for point in points:
        if os.access(point, os.W_OK) and not os.statvfs(point).f_flag & os.ST_RDONLY:
            continue
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                ["mount", "-o", "remount,rw", str(point)], capture_output=True, timeout=10
            )


def detect() -> CgroupBackend:
    """The cgroup backend this host gives: v2 when its controllers are delegated, else v1.

    Raises CgroupUnavailable, saying what is missing, when neither can be created and written.
    """
    v1_mounts, v2_mount = _mounts()
    if os.geteuid() == 0:
        _remount_writable(
            sorted({p for p, _ in v1_mounts.values()} | ({v2_mount[0]} if v2_mount else set()))
        )
    own = _own_paths()
    problems: list[str] = []
    if v2_mount is not None and "" in own:
        try:
            return _setup_v2(*v2_mount, own[""])
        except CgroupUnavailable as exc:
            problems.append(str(exc))
    else:
        problems.append("no cgroup v2 hierarchy")
    if v1_mounts:
        try:
            return _setup_v1(v1_mounts, own)
        except CgroupUnavailable as exc:
            problems.append(str(exc))
    else:
        problems.append("no cgroup v1 hierarchy")
    raise CgroupUnavailable("; ".join(problems))
