"""The artifact store: layout, storedPath, and refusing names and paths that would escape."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from activities.artifacts import ArtifactStore
from workflows.contract.artifacts import UnsafePathError, check_name


def test_layout_and_stored_path_relative_to_root(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "root")
    workspace = store.workspace("acme", "run-1")
    assert workspace == tmp_path / "root" / "runs" / "acme" / "run-1" / "workspace"
    assert workspace.is_dir()

    record = store.write_text("acme", "run-1", "report.txt", "hello")
    assert record.storedPath == "runs/acme/run-1/artifacts/report.txt"
    assert (store.root / record.storedPath).read_text() == "hello"
    assert record.status == "captured"
    assert record.type == "file"
    assert record.capturedAt and record.capturedAt.endswith("Z")


def test_write_replaces_atomically_and_leaves_no_temp_files(store: ArtifactStore) -> None:
    store.write_text("acme", "run-1", "a", "first")
    store.write_bytes("acme", "run-1", "a", b"second")
    folder = store.artifacts_dir("acme", "run-1")
    assert os.listdir(folder) == ["a"]
    assert (folder / "a").read_bytes() == b"second"


def test_copy_file_records_source(store: ArtifactStore, tmp_path: Path) -> None:
    source = tmp_path / "src.bin"
    source.write_bytes(b"\x00\x01")
    record = store.copy_file("acme", "run-1", "out.bin", source, "dist/src.bin")
    assert record.sourcePath == "dist/src.bin"
    assert (store.root / str(record.storedPath)).read_bytes() == b"\x00\x01"


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../x", "/abs", "a\\b", "a\0b", "x" * 256])
def test_unsafe_names_refused(name: str) -> None:
    with pytest.raises(UnsafePathError):
        check_name(name)


@pytest.mark.parametrize("name", ["report.json", "map[3]::build.stdout", "a..b", ".hidden"])
def test_safe_names_accepted(name: str) -> None:
    assert check_name(name) == name


def test_unsafe_tenant_or_run_id_refused(store: ArtifactStore) -> None:
    with pytest.raises(UnsafePathError, match="tenant"):
        store.workspace("..", "run-1")
    with pytest.raises(UnsafePathError, match="run id"):
        store.workspace("acme", "a/b")
    with pytest.raises(UnsafePathError):
        store.write_text("acme", "run-1", "../escape", "x")
    assert not (store.root / "runs" / "acme" / "escape").exists()


@pytest.mark.parametrize("relative", ["../x", "a/../../x", "/etc/passwd", "a\0b"])
def test_workspace_path_refuses_escape(store: ArtifactStore, relative: str) -> None:
    with pytest.raises(UnsafePathError):
        store.workspace_path("acme", "run-1", relative)


def test_workspace_path_refuses_symlink_out(store: ArtifactStore, tmp_path: Path) -> None:
    workspace = store.workspace("acme", "run-1")
    (workspace / "link").symlink_to(tmp_path)
    with pytest.raises(UnsafePathError, match="escapes"):
        store.workspace_path("acme", "run-1", "link/secret.txt")


def test_workspace_path_inside(store: ArtifactStore) -> None:
    workspace = store.workspace("acme", "run-1")
    assert store.workspace_path("acme", "run-1", "a/../b/c.txt") == workspace / "b" / "c.txt"
    assert store.workspace_path("acme", "run-1", ".") == workspace


def test_map_items_stored_a_file_per_chunk_and_read_back_only_inside_the_run(
    store: ArtifactStore,
) -> None:
    items = [{"host": f"h{i}"} for i in range(1_201)]
    folder, chunks = store.write_map_items("acme", "run-1", "loop[3]::fan", 500, items)
    assert chunks == 3 and folder.startswith("runs/acme/run-1/maps/")
    assert store.read_map_items("acme", "run-1", folder, 2) == items[1000:]
    assert store.read_map_items("acme", "run-1", folder, 0) == items[:500]
    # Another run's (or tenant's) activity cannot read them, nor a folder outside the run.
    with pytest.raises(FileNotFoundError):
        store.read_map_items("other", "run-1", folder, 0)
    with pytest.raises(FileNotFoundError):
        store.read_map_items("acme", "run-1", "runs/acme/run-1/../../../etc", 0)
    with pytest.raises(FileNotFoundError):
        store.read_map_items("acme", "run-1", folder, 3)
