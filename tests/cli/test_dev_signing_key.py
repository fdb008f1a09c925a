"""`taskrunner dev` keeps one signing key per data dir, so links and webhook secrets outlive it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cli.main import CliError
from cli.service_commands import SIGNING_KEY_FILE, dev_signing_key


def test_made_once_and_kept_private(tmp_path: Path) -> None:
    data = tmp_path / "var"
    key = dev_signing_key(data)
    assert len(key) >= 32
    assert dev_signing_key(data) == key
    assert stat.S_IMODE((data / SIGNING_KEY_FILE).stat().st_mode) == 0o600
    assert dev_signing_key(tmp_path / "other") != key


def test_a_file_without_a_key_is_an_error(tmp_path: Path) -> None:
    (tmp_path / SIGNING_KEY_FILE).write_text("short\n")
    with pytest.raises(CliError, match="delete it"):
        dev_signing_key(tmp_path)
