"""Reading a declared file output out of the run workspace, refusing anything but a plain file.

A step's files are untrusted: a symlink or hard link could point capture at another tenant's
data or the worker's own files (`ln /etc/hostname out.txt`), and a FIFO or device could hang or
flood it. So the path is walked one component at a time with `O_NOFOLLOW` relative to the
workspace's own descriptor (no symlink anywhere on the way, and no race between a check and the
open), and the file must be a regular file with exactly one link. Its bytes are then copied:
the artifact never shares an inode with the workspace.
"""

from __future__ import annotations

import os
import posixpath
import stat
from pathlib import Path

MAX_CAPTURE_BYTES = 1024 * 1024 * 1024


class CaptureRefused(Exception):
    """Why a declared output cannot be captured (the message is the record's notes)."""


def read_output(workspace: Path, relative: str, max_bytes: int = MAX_CAPTURE_BYTES) -> bytes:
    """The bytes of the regular, singly-linked file at `relative` inside `workspace`."""
    if not relative or "\0" in relative or posixpath.isabs(relative):
        raise CaptureRefused(f"refused: {relative!r} is not a relative path")
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise CaptureRefused(f"refused: {relative!r} leaves the run workspace")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(workspace, flags | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            try:
                nxt = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
            except FileNotFoundError:
                raise CaptureRefused(f"file {relative!r} not found in the run workspace") from None
            except OSError:
                raise CaptureRefused(
                    f"refused: {part!r} in {relative!r} is a link or not a folder"
                ) from None
            os.close(fd)
            fd = nxt
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below.
            file_fd = os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=fd)
        except FileNotFoundError:
            raise CaptureRefused(f"file {relative!r} not found in the run workspace") from None
        except OSError as exc:
            if exc.errno == 40:  # ELOOP: the last component is a symlink
                raise CaptureRefused(f"refused: {relative!r} is a symbolic link") from None
            raise CaptureRefused(f"could not open {relative!r}: {exc.strerror}") from None
    finally:
        os.close(fd)
    try:
        info = os.fstat(file_fd)
        if not stat.S_ISREG(info.st_mode):
            raise CaptureRefused(f"refused: {relative!r} is not a regular file")
        if info.st_nlink != 1:
            raise CaptureRefused(
                f"refused: {relative!r} is a hard link ({info.st_nlink} names for one file)"
            )
        if info.st_size > max_bytes:
            raise CaptureRefused(f"refused: {relative!r} is larger than {max_bytes} bytes")
        chunks = []
        left = max_bytes + 1
        while left > 0 and (chunk := os.read(file_fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:
            raise CaptureRefused(f"refused: {relative!r} is larger than {max_bytes} bytes")
        return data
    finally:
        os.close(file_fd)
