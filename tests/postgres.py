"""A real PostgreSQL server for the tests, from Debian's packages (/usr/lib/postgresql/*/bin).

`PostgresServer.start()` runs initdb and postgres as the `postgres` user (we are root in CI)
with the data and socket folders in one temporary folder owned by that user, listening on a
free TCP port of 127.0.0.1 only; `stop()` stops it and removes the folder. Each test gets a
database of its own (`new_database()`, CREATE DATABASE ... TEMPLATE template0).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg

START_TIMEOUT = timedelta(seconds=60)
USER = "postgres"


def binaries() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb and postgres, or None."""
    found = sorted(
        (Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    found = [p for p in found if (p / "initdb").exists() and (p / "postgres").exists()]
    return found[-1] if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres() -> dict[str, Any]:
    """Popen arguments that run a program as the `postgres` user when we are root (initdb and
    postgres refuse to run as root), like `runuser -u postgres --` but without a process
    between us and postgres (signals reach it)."""
    return {"user": USER, "group": USER, "extra_groups": []} if os.geteuid() == 0 else {}


class PostgresServer:
    """One postgres process on 127.0.0.1:<port>, trust authentication, for the test session."""

    def __init__(self, bin_dir: Path) -> None:
        """A server from the binaries in `bin_dir`, not started yet."""
        self.bin_dir = bin_dir
        # Not under TMPDIR: the suite's folder is root's alone (0700), out of postgres's reach.
        self.folder = Path(tempfile.mkdtemp(prefix="alert-router-pg-", dir="/tmp"))
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._databases = 0

    def url(self, database: str = "postgres") -> str:
        """The URL of `database` on this server (user postgres, no password)."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """initdb, then postgres, then wait (bounded) until it accepts a connection.

        Raises RuntimeError with the server's log if it does not start in START_TIMEOUT."""
        data, sockets = self.folder / "data", self.folder / "sock"
        sockets.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.folder, USER)
            shutil.chown(sockets, USER)
        subprocess.run(
            [
                str(self.bin_dir / "initdb"), "-D", str(data), "-U", USER, "-A", "trust",
                "--no-sync", "-E", "UTF8", "--locale=C",
            ],
            check=True,
            capture_output=True,
            **_as_postgres(),
        )  # fmt: skip
        self._run()

    def restart(self) -> None:
        """Stop the server (fast shutdown: clients are disconnected) and start it again on the
        same data and port, as an upgrade or a failover of the database does."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=30)
        self._run()

    def _run(self) -> None:
        """Start postgres on the data made by start() and wait (bounded) until it accepts a
        connection. Raises RuntimeError with the server's log if it does not."""
        data, sockets, log = self.folder / "data", self.folder / "sock", self.folder / "log"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    str(self.bin_dir / "postgres"), "-D", str(data), "-p", str(self.port),
                    "-h", "127.0.0.1", "-k", str(sockets), "-c", "fsync=off",
                    "-c", "max_connections=200", "-c", "shared_buffers=16MB",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                **_as_postgres(),
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT.total_seconds()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                if self._ready():
                    return
            time.sleep(0.1)
        text = log.read_text(errors="replace")
        self.stop()
        raise RuntimeError(f"PostgreSQL did not start in {START_TIMEOUT}:\n{text}")

    def _ready(self) -> bool:
        """Whether pg_isready says the server accepts connections."""
        done = subprocess.run(
            [str(self.bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
            capture_output=True,
        )
        return done.returncode == 0

    async def new_database(self) -> str:
        """A new, empty database; its URL."""
        self._databases += 1
        name = f"test_{os.getpid()}_{self._databases}"
        conn = await asyncpg.connect(self.url())
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        finally:
            await conn.close()
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (fast shutdown, bounded; then killed) and remove its folder."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown: clients are disconnected
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


async def end_connections(url: str) -> None:
    """Terminate every other connection to the database at `url`, as a network cut or an
    administrator would."""
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname=current_database() AND pid<>pg_backend_pid()"
        )
    finally:
        await admin.close()
