"""A real PostgreSQL server for the tests: started once per test session on a free port in a
temporary directory, stopped (and its directory removed) at the end.

The server binaries come from the `pgserver` package (PostgreSQL 16, a dev dependency), so a
fresh machine needs nothing but `make test`; Debian's `postgresql` package, when installed,
is used if pgserver's are missing. PostgreSQL refuses to run as root: as root, the server runs
as `nobody`, which owns its data directory; when `nobody` cannot reach the binaries where they
are installed (a checkout under a private home directory), they are copied once to a directory
it can reach.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

DATABASES = ("sqlite", "postgresql")
"""The kinds of database the API runs on, each test of the database on both."""
USER = "taskrunner"
START_TIMEOUT = 30.0


def binaries() -> Path:
    """The directory holding initdb, postgres and psql."""
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.origin is not None:
        bin_dir = Path(spec.origin).parent / "pginstall" / "bin"
        if (bin_dir / "postgres").exists():
            return bin_dir
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "postgres").exists():
            return Path(candidate)
    raise RuntimeError(
        "no PostgreSQL server binaries: install the project's dev extra (`make test` does), "
        "which brings pgserver"
    )


def reachable_by_anyone(path: Path) -> bool:
    """Whether a user other than the owner can get to `path` (every directory on the way o+x)."""
    return all(directory.stat().st_mode & stat.S_IXOTH for directory in [path, *path.parents])


def shared_copy(bin_dir: Path) -> Path:
    """pgserver's installation copied where anyone can reach it (once, then kept): its
    `pginstall` and, beside its package, the `pgserver.libs` its binaries' RPATH names."""
    install = bin_dir.parent  # .../site-packages/pgserver/pginstall
    name = hashlib.sha256(str(install).encode()).hexdigest()[:12]
    target = Path(tempfile.gettempdir()) / f"taskrunner-postgres-{name}"
    if not (target / "pgserver" / "pginstall" / "bin" / "postgres").exists():
        staging = Path(tempfile.mkdtemp(prefix="taskrunner-postgres-copy-"))
        shutil.copytree(install, staging / "pgserver" / "pginstall", symlinks=True)
        libs = install.parent.parent / "pgserver.libs"
        if libs.is_dir():
            shutil.copytree(libs, staging / "pgserver.libs", symlinks=True)
        for root, dirs, files in os.walk(staging):
            for entry in dirs + files:
                where = Path(root, entry)
                if not where.is_symlink():
                    where.chmod(where.stat().st_mode | stat.S_IROTH | stat.S_IXOTH)
        staging.chmod(0o755)
        try:
            staging.rename(target)
        except OSError:  # another session made it meanwhile
            shutil.rmtree(staging, ignore_errors=True)
    return target / "pgserver" / "pginstall" / "bin"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    def __init__(self) -> None:
        self.bin = binaries()
        self.root = Path(tempfile.mkdtemp(prefix="taskrunner-pg-"))
        self.data = self.root / "data"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._as: dict[str, int] = {}
        if os.geteuid() == 0:
            if not reachable_by_anyone(self.bin / "postgres"):
                self.bin = shared_copy(self.bin)
            nobody = pwd.getpwnam("nobody")
            self._as = {"user": nobody.pw_uid, "group": nobody.pw_gid}
            os.chown(self.root, nobody.pw_uid, nobody.pw_gid)

    def start(self) -> PostgresServer:
        subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", USER, "--auth=trust",
             "-E", "UTF8", "--no-instructions", "--no-sync"],
            check=True, capture_output=True, **self._as,  # type: ignore[arg-type]
        )  # fmt: skip
        for _ in range(5):  # a free port can be taken before the server binds it: try another
            self.port = _free_port()
            with (self.root / "server.log").open("ab") as log:
                self.process = subprocess.Popen(
                    [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
                     "-h", "127.0.0.1", "-k", "", "-c", "fsync=off", "-c", "synchronous_commit=off",
                     "-c", "full_page_writes=off", "-c", "max_connections=300"],
                    stdout=log, stderr=subprocess.STDOUT, **self._as,
                )  # fmt: skip
            if self._wait_ready():
                return self
            self._stop_process()
        raise RuntimeError(f"PostgreSQL did not start; see {self.root / 'server.log'}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            ready = subprocess.run(
                [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
                check=False,
            )
            if ready.returncode == 0:
                return True
            time.sleep(0.1)
        return False

    def psql(self, sql: str, database: str = "postgres") -> None:
        subprocess.run(
            [str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER,
             "-d", database, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
            check=True, capture_output=True,
        )  # fmt: skip

    def create_database(self, prefix: str = "test") -> str:
        """A new, empty database; its asyncpg URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://{USER}@127.0.0.1:{self.port}/{database}"

    def _stop_process(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGINT)  # "fast" shutdown: clients are cut off
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def stop(self) -> None:
        self._stop_process()
        shutil.rmtree(self.root, ignore_errors=True)
