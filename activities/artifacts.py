"""The artifact store: a local folder holding each run's workspace and captured artifacts.

Layout under the configured root:

    runs/<tenant>/<runId>/workspace/         the shell executor's default working directory
    runs/<tenant>/<runId>/artifacts/<name>   captured files, stdout/stderr of shell steps, ...
    runs/<tenant>/<runId>/scratch/           executors' temporary files (removed after use)

`ArtifactRecord.storedPath` is the path relative to the root, so the root can move (or be
mounted elsewhere by the API) without rewriting run state. Tenants, run ids and artifact names
are single path components: anything that could step outside its folder is refused.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from activities.models import ArtifactRecord

_MAX_NAME_BYTES = 255


class UnsafePathError(ValueError):
    """A name or relative path that would escape the folder it belongs in."""


def check_name(name: str, what: str = "artifact name") -> str:
    """Return `name` if it is a safe single path component, else raise UnsafePathError."""
    if not isinstance(name, str) or not name:
        raise UnsafePathError(f"{what} must be a non-empty string")
    if name in {".", ".."}:
        raise UnsafePathError(f"{what} {name!r} is not allowed")
    if "\0" in name:
        raise UnsafePathError(f"{what} must not contain NUL")
    if "/" in name or "\\" in name:
        raise UnsafePathError(f"{what} {name!r} must not contain a path separator")
    if len(name.encode()) > _MAX_NAME_BYTES:
        raise UnsafePathError(f"{what} is longer than {_MAX_NAME_BYTES} bytes")
    return name


def now_iso() -> str:
    """Current UTC time as the contract writes it, e.g. `2025-12-06T10:02:00Z`."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class ArtifactStore:
    """A local-folder artifact store rooted at `root` (created on demand)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()

    def run_dir(self, tenant: str, run_id: str) -> Path:
        return self.root / "runs" / check_name(tenant, "tenant") / check_name(run_id, "run id")

    def workspace(self, tenant: str, run_id: str) -> Path:
        """The run's workspace folder, created if it does not exist yet."""
        path = self.run_dir(tenant, run_id) / "workspace"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def artifacts_dir(self, tenant: str, run_id: str) -> Path:
        path = self.run_dir(tenant, run_id) / "artifacts"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def scratch_dir(self, tenant: str, run_id: str) -> Path:
        """A folder for an executor's temporary files, outside the workspace and artifacts."""
        path = self.run_dir(tenant, run_id) / "scratch"
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
        # Write then rename, so a reader never sees half an artifact.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self._record(name, target)

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
            capturedAt=now_iso(),
        )
