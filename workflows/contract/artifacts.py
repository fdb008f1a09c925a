"""Where a run's files live: the artifact store's layout, shared by the worker that writes it
and the API that serves captured files from it.

Under the store's root (the `data_dir` setting):

    runs/<tenant>/<runId>/workspace/         the shell executor's default working directory
    runs/<tenant>/<runId>/artifacts/<name>   captured files, stdout/stderr of shell steps, ...
    runs/<tenant>/<runId>/scratch/           executors' temporary files (removed after use)
    runs/<tenant>/<runId>/logs/<first>-<last>.ndjson   log entries paged out of the workflow
    runs/<tenant>/<runId>/maps/<key>/<n>.json          a fanned-out map's items, chunk n's slice
    runs/<tenant>/<runId>/steps/<key>-<first>-<last>.ndjson  a long loop's finished iterations'
                                                       step states, paged out of the workflow

`ArtifactRecord.storedPath` is the path relative to the root, so the root can move (or be
mounted elsewhere by the API) without rewriting run state. Tenants, run ids and artifact names
are single path components: anything that could step outside its folder is refused.
"""

from __future__ import annotations

from pathlib import Path

RUNS = "runs"
WORKSPACE = "workspace"
ARTIFACTS = "artifacts"
SCRATCH = "scratch"
LOGS = "logs"
MAPS = "maps"
STEPS = "steps"

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


def run_folder(root: Path, tenant: str, run_id: str) -> Path:
    """The folder of one run's files under a (resolved) store root."""
    return root / RUNS / check_name(tenant, "tenant") / check_name(run_id, "run id")


def log_segment_name(first: int, last: int) -> str:
    """The file of log entries `first..last` in the run's `logs/` folder (sorts in order)."""
    return f"{first:012d}-{last:012d}.ndjson"


def stored_file(root: Path, tenant: str, run_id: str, stored_path: str) -> Path | None:
    """The file `stored_path` names, if it is a regular file inside this run's folder.

    Resolving (symlinks included) before the check keeps `..` and links from reaching anything
    else; a tenant or run id that is no single path component names no file at all.
    """
    resolved = root.expanduser().resolve()
    try:
        run_root = run_folder(resolved, tenant, run_id)
    except UnsafePathError:
        return None
    path = (resolved / stored_path).resolve()
    if not path.is_relative_to(run_root) or not path.is_file():
        return None
    return path
