"""A private, throwaway PostgreSQL server for tests that must stop or restart the database.

The machine's shared server is used by every engineer's tests at once, so restart tests get their own cluster:
`initdb` into a temporary directory, trust authentication, loopback only, a free port. PostgreSQL refuses to run as
root, so when we are root the binaries run as the `postgres` OS user (`runuser -u postgres --`).

    with PrivatePostgres() as pg:
        url = pg.url("t2m")           # postgresql+psycopg://postgres@127.0.0.1:{port}/t2m
        pg.restart(outage_seconds=1)  # stop -m fast, stay down, start again
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class PrivatePostgresError(RuntimeError):
    pass


def find_bin_dir() -> Path:
    """`T2M_PG_BIN`, else the newest /usr/lib/postgresql/*/bin with initdb, else initdb on PATH."""
    explicit = os.environ.get("T2M_PG_BIN")
    candidates = [explicit] if explicit else sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0, reverse=True
    )
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    raise PrivatePostgresError("no PostgreSQL server binaries found: install postgresql or set T2M_PG_BIN to the dir with initdb")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivatePostgres:
    def __init__(self, *, bin_dir: Path | None = None, os_user: str = "postgres", port: int | None = None):
        self.bin_dir = bin_dir or find_bin_dir()
        self.port = port or _free_port()
        self.as_root = os.geteuid() == 0
        self.os_user = os_user if self.as_root else pwd.getpwuid(os.geteuid()).pw_name
        # /tmp: every parent directory must be reachable by the server's OS user.
        self.root = Path(tempfile.mkdtemp(prefix="t2m-private-pg-", dir="/tmp" if self.as_root else None))
        self.data = self.root / "data"
        self.log = self.root / "server.log"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.as_root:
            command = ["runuser", "-u", self.os_user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise PrivatePostgresError(f"{args[0]} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}")
        return result

    def start(self) -> "PrivatePostgres":
        if self.as_root:
            shutil.chown(self.root, self.os_user)
        if not (self.data / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        self._pg_ctl_start()
        return self

    def _pg_ctl_start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, *, outage_seconds: float = 0.0, mode: str = "fast") -> None:
        """Stop (`-m fast` ends every session), stay down `outage_seconds`, start again."""
        self.stop(mode)
        if outage_seconds:
            time.sleep(outage_seconds)
        self._pg_ctl_start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def close(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "PrivatePostgres":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()
