"""The inbox: webhook payloads answered 200 and not planned yet, in a SQLite file of their own.

Intake is the only writer (group commit, then the 200); the store reads the payloads after its
watermark, plans them, and moves the watermark in the transaction that writes their plans. Rows
at or below the watermark are then deleted here. A file of its own means an intake process
never waits for the store's write lock, nor the store for intake's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime

from router.checkpoint import Checkpointer
from router.db import FileIdentity, transaction, ts
from router.db import connect as db_connect
from router.errors import StoreError
from router.logs import event

log = logging.getLogger("router.inbox")

PRUNE_INTERVAL_S = 1.0
PRUNE_ROWS = 200  # deleted per statement, answering webhooks in between
BUSY_RETRY_S = 0.01  # another connection holds the write lock: try again this soon
BUSY_TIMEOUT_S = 5.0  # ... and refuse the payloads (503) after this long
WATERMARK_TTL_S = 0.1  # how stale the store's watermark may be when a commit counts the backlog
INSERT_ROWS = 500  # per INSERT statement (SQLite allows 32,766 bound values; 3 per row here)
PROBE_BYTES = 64 * 1024  # written (and deleted) by the probe that sees a full disk recover

Pending = tuple[bytes, str, datetime, "asyncio.Future[None]"]  # body, correlation id, received


def inbox_path(store_path: str) -> str:
    """Where the inbox of the store at `store_path` lives: beside it, `<store>.inbox`."""
    return f"{store_path}.inbox"


def store_path_of(path: str) -> str | None:
    """The store file beside the inbox at `path` (see inbox_path), if it is named so."""
    suffix = inbox_path("")
    return path[: -len(suffix)] if path.endswith(suffix) else None


COLUMNS = ["id", "body", "correlation_id", "received_at"]


def connect(path: str, synchronous: str) -> sqlite3.Connection:
    """A connection to the inbox file, creating it (and its one table) if need be.

    Raises sqlite3.DatabaseError for a file that is not SQLite, or whose `inbox` table is not
    ours (another program's file at this path)."""
    db = db_connect(path, synchronous)
    db.execute(
        "CREATE TABLE IF NOT EXISTS inbox (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " body BLOB NOT NULL, correlation_id TEXT NOT NULL, received_at TEXT NOT NULL)"
    )
    columns = [row[1] for row in db.execute("PRAGMA table_info(inbox)")]
    if columns != COLUMNS:
        db.close()
        raise sqlite3.DatabaseError(f"not an alert-router inbox (its table inbox has {columns})")
    return db


class Inbox:
    """Writes accepted payloads durably, many per transaction; knows how many wait to be planned.

    `planned_through()` gives the store's watermark: the id of the last payload planned.
    `on_committed` hears of new payloads. Everything runs on the event loop's thread.

    Commits are made right there, not on a thread: with `synchronous=normal` a commit is a few
    writes and no fsync, and the hops to a thread and back each waited for the GIL and a
    wake-up under load (median webhook latency at 1,000 payloads/s, measured with the
    router's process paused: 8.7 ms with a writer thread, 1.9 ms without). Payloads that reach accept() in the same turn of the loop share
    one transaction (group commit). The write lock is never waited for on the loop: if
    another connection holds it (a checkpoint cutting the WAL, a backup tool), the batch is
    tried again every BUSY_RETRY_S, later payloads join it, and after BUSY_TIMEOUT_S they are
    refused (503: Alertmanager retries).

    Nothing is accepted into a file that is lost: before each commit, the inbox file and the
    store's file beside it are checked to be the files opened (a deleted one would take what
    is written to it away at the next start). `problem()` says why intake cannot accept now:
    a lost file, or a commit that failed (disk full, I/O error) and no commit or probe since
    has succeeded; a probe is tried every PRUNE_INTERVAL_S while it fails.
    """

    def __init__(self, path: str, synchronous: str, planned_through: Callable[[], int]) -> None:
        self.path = path
        self.synchronous = synchronous
        self.planned_through = planned_through
        self.on_committed: Callable[[], None] | None = None
        self.last_id = 0  # of the last payload committed
        self.backlog = 0  # payloads committed and not planned yet, as of the last commit or prune
        self._through = 0  # the store's watermark, as last read
        self._through_read_at = -WATERMARK_TTL_S
        self._db: sqlite3.Connection | None = None
        self._files: list[FileIdentity] = []
        self._failing: str | None = None  # the last commit's error, until a commit succeeds
        self._checkpointer = Checkpointer(path)
        self._pending: list[Pending] = []
        self._pending_since = 0.0  # when the oldest pending payload arrived (monotonic)
        self._flush_handle: asyncio.Handle | None = None
        self._pruner: asyncio.Task[None] | None = None

    async def open(self) -> None:
        try:
            self._db = connect(self.path, self.synchronous)
            self._db.execute("PRAGMA busy_timeout=0")  # see the class docstring
            last = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name='inbox'").fetchone()
            self.last_id = last[0] if last else 0  # from here on, each commit sets it
            self._count(fresh=True)
        except sqlite3.Error as exc:
            raise StoreError(
                f"{self.path}: {exc}: the inbox (payloads accepted and not planned yet) cannot"
                " be read; move it aside to start without those payloads"
            ) from exc
        self._files = _watched(self.path)
        self._checkpointer.start()
        self._pruner = asyncio.create_task(self._prune_forever(), name="inbox prune")

    async def aclose(self) -> None:
        """Close; what was handed to accept() is committed first, or refused."""
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._pending_since = -BUSY_TIMEOUT_S  # a last try, no more waiting
        self._flush()
        await self._checkpointer.aclose()
        if self._db is not None:
            self._db.close()
            self._db = None

    async def accept(self, body: bytes, now: datetime, correlation_id: str) -> None:
        """Write one validated payload; return once that is committed (durable)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.append((body, correlation_id, now, future))
        if self._flush_handle is None:
            self._flush_handle = loop.call_soon(self._flush)
        await future

    def _flush(self) -> None:
        self._flush_handle = None
        if not self._pending:
            return
        error: StoreError | None = None
        try:
            if self._db is None:
                raise StoreError(f"{self.path}: the inbox is not open")
            lost = self.files_lost()
            if lost:
                raise StoreError(lost[0])
            with transaction(self._db) as db:
                for start in range(0, len(self._pending), INSERT_ROWS):
                    last = _insert(db, self._pending[start : start + INSERT_ROWS])
            self.last_id = last  # only once committed
            self._failing = None
            self._count(fresh=False)
        except sqlite3.Error as exc:
            waited = time.monotonic() - self._pending_since
            if _locked(exc) and waited < BUSY_TIMEOUT_S:
                loop = asyncio.get_running_loop()
                self._flush_handle = loop.call_later(BUSY_RETRY_S, self._flush)
                return
            error = StoreError(f"{self.path}: {exc}")
            if not _locked(exc):
                self._failing = f"the last commit to the inbox failed: {error}"
        except StoreError as exc:
            error = exc
        batch, self._pending = self._pending, []
        for *_, future in batch:
            if future.done():  # the caller went away (request cancelled)
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(None)
        if error is None and self.on_committed is not None:
            self.on_committed()

    def files_lost(self) -> list[str]:
        """Why the inbox's or the store's file is no longer the one opened; empty if both are."""
        return [p for p in (f.lost() for f in self._files) if p is not None]

    def problem(self) -> str | None:
        """Why a payload cannot be accepted now (one line), or None if it can."""
        lost = self.files_lost()
        return lost[0] if lost else self._failing

    def _probe(self) -> None:
        """After a failed commit: commit (and delete) PROBE_BYTES; success clears the failure."""
        if self._db is None:
            return
        try:
            with transaction(self._db) as db:
                db.execute("CREATE TABLE IF NOT EXISTS probe (data BLOB)")
                db.execute("INSERT INTO probe VALUES (zeroblob(?))", (PROBE_BYTES,))
                db.execute("DELETE FROM probe")
        except sqlite3.Error:
            return
        event(log, logging.INFO, "inbox_writable_again", path=self.path)
        self._failing = None

    def _count(self, fresh: bool) -> None:
        """backlog = the last id written - the store's watermark (ids only grow).

        The watermark is read again if `fresh`, or if the last reading is WATERMARK_TTL_S old:
        a reading behind the store only makes the backlog look larger, never smaller.
        """
        now = time.monotonic()
        if fresh or now - self._through_read_at >= WATERMARK_TTL_S:
            try:
                self._through = self.planned_through()
                self._through_read_at = now
            except sqlite3.Error:
                pass  # keep the last reading; the next commit or prune tries again
        self.backlog = max(0, self.last_id - self._through)

    async def _prune_forever(self) -> None:
        while True:
            await asyncio.sleep(PRUNE_INTERVAL_S)
            if self._failing is not None:
                self._probe()
            try:
                await self._prune()
            except sqlite3.Error as exc:  # planned rows stay a little longer; no harm
                if not _locked(exc):
                    event(
                        log, logging.WARNING, "inbox_prune_failed", path=self.path, error=str(exc)
                    )

    async def _prune(self) -> None:
        """Delete what the store has planned (its plans are committed in the store's file),
        PRUNE_ROWS at a time so that webhooks are answered in between."""
        self._count(fresh=True)
        while self._db is not None:
            first = self._db.execute("SELECT min(id) FROM inbox").fetchone()[0]
            if first is None or first > self._through:
                return
            upto = min(self._through, first + PRUNE_ROWS - 1)
            self._db.execute("DELETE FROM inbox WHERE id<=?", (upto,))
            await asyncio.sleep(0)


def _watched(path: str) -> list[FileIdentity]:
    """The inbox file at `path`, and the store's file beside it if there is one."""
    store = store_path_of(path)
    paths = [path] + ([store] if store is not None and os.path.exists(store) else [])
    return [FileIdentity(p) for p in paths]


def _locked(exc: sqlite3.Error) -> bool:
    """Another connection holds the lock (SQLITE_BUSY): worth trying again shortly."""
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY


def _insert(db: sqlite3.Connection, rows: list[Pending]) -> int:
    """Insert `rows` with one statement; the id of the last one."""
    values = ",".join(["(?,?,?)"] * len(rows))
    params = [v for body, cid, now, _ in rows for v in (body, cid, ts(now))]
    cursor = db.execute(
        f"INSERT INTO inbox (body, correlation_id, received_at) VALUES {values}", params
    )
    return int(cursor.lastrowid or 0)
