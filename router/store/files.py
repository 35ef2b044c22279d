"""The store's SQLite file: how it is opened, written, dated, watched and locked."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from router.errors import StoreError
from router.logs import event

log = logging.getLogger("router.store")
JOURNAL_LIMIT_BYTES = 4 * 1024 * 1024  # the WAL file is cut back to this after a checkpoint
# A commit writes every page it touches whole, to the WAL and again at the checkpoint: small
# pages make a commit of a few changed rows write less (SQLite's default is 4,096).
PAGE_SIZE = 1024


def connect(path: str, synchronous: str) -> sqlite3.Connection:
    """A connection in WAL mode, autocommit (transactions are explicit), usable off its thread.

    A new file gets PAGE_SIZE pages (a file made before keeps its own). SQLite checkpoints the
    WAL itself once it holds JOURNAL_LIMIT_BYTES of pages (`wal_autocheckpoint`), and a
    checkpoint that reset the WAL cuts the file back to JOURNAL_LIMIT_BYTES.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA busy_timeout=5000")
    db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # before WAL mode: only an empty file takes it
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous.upper()}")
    db.execute(f"PRAGMA journal_size_limit={JOURNAL_LIMIT_BYTES}")
    (page_size,) = db.execute("PRAGMA page_size").fetchone()
    db.execute(f"PRAGMA wal_autocheckpoint={JOURNAL_LIMIT_BYTES // page_size}")
    return db


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error so the connection stays usable."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def ts(value: datetime | None) -> str | None:
    """A timestamp as stored: ISO 8601 in UTC."""
    return value.astimezone(UTC).isoformat() if value is not None else None


class FileIdentity:
    """Which file a path named when it was opened (device and inode), to notice it go.

    A state file deleted (or replaced) under a running router keeps working through the open
    descriptor, but whatever is written to it is gone at the next start. `lost()` compares the
    path with the file opened: it says why they differ, or None while they are the same. The
    first time it differs is logged, as an error, once.
    """

    def __init__(self, path: str) -> None:
        """Remember the file at `path` now; raises StoreError if it cannot be read."""
        self.path = path
        try:
            st = os.stat(path)
        except OSError as exc:
            raise StoreError(f"{path}: {exc.strerror}") from exc
        self._id = (st.st_dev, st.st_ino)
        self._reported = False

    def lost(self) -> str | None:
        """None if `path` is still the file opened; else what happened to it (one line)."""
        problem = self._compare()
        if problem is not None and not self._reported:
            self._reported = True
            event(
                log,
                logging.ERROR,
                "state_file_lost",
                error=problem,
                detail="webhooks are refused (503) and /readyz is not ready until alert-router"
                " is restarted; what was written to the lost file since it went is lost with it",
            )
        return problem

    def _compare(self) -> str | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return f"{self.path} was deleted while alert-router had it open"
        except OSError as exc:
            return f"{self.path}: {exc.strerror}"
        if (st.st_dev, st.st_ino) != self._id:
            return f"{self.path} was replaced by another file while alert-router had it open"
        return None


class ProcessLock:
    """An exclusive lock on `<store>.lock` for the life of this process (flock(2)).

    Two routers on one SQLite store would both plan and both deliver: the second refuses to
    start instead. The kernel lets the lock go when the process ends, even by SIGKILL.
    """

    def __init__(self, store_path: str) -> None:
        self.path = f"{store_path}.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise StoreError naming the process that holds it."""
        folder = Path(self.path).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(
                f"{exc.filename or self.path}: {exc.strerror}: storage.path must be in a folder"
                " that alert-router's user can write"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StoreError(f"{self.path}: cannot lock: {exc.strerror}") from exc
            raise StoreError(
                f"{self.path}: another alert-router (pid {holder}) uses this store; stop it"
                " first, or give this one its own storage.path"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Let the lock go (closing its file); nothing if it is not held."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
