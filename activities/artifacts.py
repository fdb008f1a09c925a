"""The artifact store: a local folder holding each run's workspace and captured artifacts.

Its layout, and the rule for names in it, are the contract's (`workflows.contract.artifacts`):
the API serves captured files from the same folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from workflows.contract.activities import ArtifactRecord
from workflows.contract.artifacts import (
    ARTIFACTS,
    LOGS,
    MAPS,
    SCRATCH,
    STEPS,
    WORKSPACE,
    UnsafePathError,
    check_name,
    log_segment_name,
    run_folder,
    stored_file,
)
from workflows.contract.times import now_rfc3339


class ArtifactStore:
    """A local-folder artifact store rooted at `root` (created on demand)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()

    def run_dir(self, tenant: str, run_id: str) -> Path:
        return run_folder(self.root, tenant, run_id)

    def workspace(self, tenant: str, run_id: str) -> Path:
        """The run's workspace folder, created if it does not exist yet."""
        path = self.run_dir(tenant, run_id) / WORKSPACE
        path.mkdir(parents=True, exist_ok=True)
        return path

    def artifacts_dir(self, tenant: str, run_id: str) -> Path:
        path = self.run_dir(tenant, run_id) / ARTIFACTS
        path.mkdir(parents=True, exist_ok=True)
        return path

    def scratch_dir(self, tenant: str, run_id: str) -> Path:
        """A folder for an executor's temporary files, outside the workspace and artifacts."""
        path = self.run_dir(tenant, run_id) / SCRATCH
        path.mkdir(parents=True, exist_ok=True)
        return path

    def artifact_path(self, tenant: str, run_id: str, name: str) -> Path:
        return self.artifacts_dir(tenant, run_id) / check_name(name)

    def workspace_path(self, tenant: str, run_id: str, relative: str) -> Path:
        """Resolve a path given relative to the run's workspace, refusing any that leaves it.

        Symlinks are followed before the check, so a link pointing outside is refused too.
        """
        if not isinstance(relative, str):
            raise UnsafePathError("workspace path must be a string")
        if "\0" in relative:
            raise UnsafePathError("workspace path must not contain NUL")
        if os.path.isabs(relative):
            raise UnsafePathError(f"workspace path {relative!r} must be relative")
        workspace = self.workspace(tenant, run_id)
        resolved = (workspace / relative).resolve()
        if not resolved.is_relative_to(workspace):
            raise UnsafePathError(f"workspace path {relative!r} escapes the run workspace")
        return resolved

    def relative(self, path: Path) -> str:
        """`path` relative to the store root, with forward slashes (the `storedPath` form)."""
        return path.relative_to(self.root).as_posix()

    def write_bytes(self, tenant: str, run_id: str, name: str, data: bytes) -> ArtifactRecord:
        """Store `data` as artifact `name` (replacing an earlier one) and describe it."""
        target = self.artifact_path(tenant, run_id, name)
        _write_whole(target, data)
        return self._record(name, target)

    def write_log_segment(self, tenant: str, run_id: str, entries: list[dict[str, Any]]) -> str:
        """Store log entries (in sequence order) as one NDJSON file in the run's `logs/`
        folder; returns its `storedPath`. Writing the same entries again gives the same file."""
        folder = self.run_dir(tenant, run_id) / LOGS
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / log_segment_name(entries[0]["sequence"], entries[-1]["sequence"])
        data = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries).encode()
        _write_whole(target, data)
        return self.relative(target)

    def write_step_segment(
        self,
        tenant: str,
        run_id: str,
        loop_id: str,
        first: int,
        last: int,
        steps: list[dict[str, Any]],
    ) -> tuple[str, int]:
        """Store step states of a loop's iterations `first..last` as one NDJSON file in the
        run's `steps/` folder (named by a digest of the loop's id, which may hold any
        characters); returns its `storedPath` and how many states it holds. An entry
        `{"segment": storedPath}` stands for the states of a segment stored before (an inner
        loop's iterations): they are written in its place. Writing the same states again gives
        the same file."""
        folder = self.run_dir(tenant, run_id) / STEPS
        folder.mkdir(parents=True, exist_ok=True)
        key = hashlib.sha256(loop_id.encode()).hexdigest()[:32]
        target = folder / f"{key}-{first:09d}-{last:09d}.ndjson"
        lines: list[bytes] = []
        for entry in steps:
            if "segment" in entry:
                inner = stored_file(self.root, tenant, run_id, str(entry["segment"]))
                if inner is None:
                    raise FileNotFoundError(f"step segment {entry['segment']} is missing")
                lines += inner.read_bytes().splitlines(keepends=True)
            else:
                lines.append(json.dumps(entry, separators=(",", ":")).encode() + b"\n")
        _write_whole(target, b"".join(lines))
        return self.relative(target), len(lines)

    def write_map_items(
        self, tenant: str, run_id: str, map_step_id: str, chunk_size: int, items: list[Any]
    ) -> tuple[str, int]:
        """Store a map's items as one JSON file per chunk of `chunk_size` under the run's `maps/`
        folder (named by a digest of the step id, which may hold any characters); returns the
        folder's path relative to the root and the number of chunks. Writing again gives the
        same files."""
        key = hashlib.sha256(map_step_id.encode()).hexdigest()[:32]
        folder = self.run_dir(tenant, run_id) / MAPS / key
        folder.mkdir(parents=True, exist_ok=True)
        chunks = 0
        for chunks, start in enumerate(range(0, len(items), chunk_size), start=1):
            data = json.dumps(items[start : start + chunk_size], separators=(",", ":")).encode()
            _write_whole(folder / f"{chunks - 1}.json", data)
        return self.relative(folder), chunks

    def read_map_items(self, tenant: str, run_id: str, folder: str, chunk: int) -> list[Any]:
        """Chunk `chunk`'s items, from a folder `write_map_items` wrote for this run."""
        path = stored_file(self.root, tenant, run_id, f"{folder}/{int(chunk)}.json")
        if path is None:
            raise FileNotFoundError(f"no items of chunk {chunk} in {folder}")
        items = json.loads(path.read_bytes())
        if not isinstance(items, list):
            raise ValueError(f"{path.name} does not hold a list of items")
        return items

    def write_text(self, tenant: str, run_id: str, name: str, text: str) -> ArtifactRecord:
        return self.write_bytes(tenant, run_id, name, text.encode())

    def copy_file(
        self, tenant: str, run_id: str, name: str, source: Path, source_path: str | None = None
    ) -> ArtifactRecord:
        """Copy a regular file into the store as artifact `name`."""
        target = self.artifact_path(tenant, run_id, name)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        os.close(fd)
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self._record(name, target, source_path)

    def _record(
        self,
        name: str,
        target: Path,
        source_path: str | None = None,
        kind: Literal["file", "object"] = "file",
    ) -> ArtifactRecord:
        return ArtifactRecord(
            name=name,
            type=kind,
            sourcePath=source_path,
            storedPath=self.relative(target),
            status="captured",
            capturedAt=now_rfc3339(),
        )


def _write_whole(target: Path, data: bytes) -> None:
    """Write then rename, so a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
