"""Step cgroups on a host several workers share: a worker starting up clears the groups dead
workers left behind, never a live worker's group, which is empty for a moment before its
command joins it (and after its command ended, before its usage is read)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from activities.sandbox.cgroups import CgroupUnavailable, CgroupV1, CgroupV2, Limits, detect

ROOT = Path(__file__).resolve().parents[2]


def parents() -> list[Path]:
    backend = detect()
    if isinstance(backend, CgroupV1):
        return sorted(set(backend.parents.values()))
    assert isinstance(backend, CgroupV2)
    return [backend.parent]


def another_worker_starts() -> None:
    """What a second worker on this host does at start-up, in a process of its own."""
    subprocess.run(
        [sys.executable, "-c", "from activities.sandbox.cgroups import detect; detect()"],
        cwd=ROOT,
        check=True,
        timeout=60,
    )


@pytest.fixture
def backend_ok() -> Iterator[None]:
    try:
        detect()
    except CgroupUnavailable as exc:
        pytest.skip(f"no cgroup here: {exc}")
    yield


@pytest.mark.usefixtures("backend_ok")
def test_a_live_workers_empty_group_survives_another_workers_start_up() -> None:
    group = detect().create(Limits(memory_mib=64, cpu_millicores=500, pids=16))
    try:
        assert group.pids() == []  # created, nothing joined yet
        another_worker_starts()
        assert all(folder.is_dir() for folder in group.folders)
        # And the step can still join it.
        joined = subprocess.run(
            ["/bin/sh", "-c", 'for f in "$@"; do echo 0 > "$f" || exit 1; done', "sh",
             *group.join_paths],
            timeout=30,
        )  # fmt: skip
        assert joined.returncode == 0
    finally:
        group.remove()
    assert not any(folder.exists() for folder in group.folders)


@pytest.mark.usefixtures("backend_ok")
def test_a_dead_workers_leftover_group_is_removed() -> None:
    gone = subprocess.Popen(["/bin/true"])
    gone.wait()
    leftovers = [parent / f"step-{gone.pid}-0123456789ab" for parent in parents()]
    for folder in leftovers:
        folder.mkdir()
    try:
        another_worker_starts()
        assert not any(folder.exists() for folder in leftovers)
    finally:
        for folder in leftovers:
            if folder.exists():
                folder.rmdir()
