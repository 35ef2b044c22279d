"""The inbox: webhook payloads answered 200 and not planned yet, in a SQLite file of their own.

Intake is the only writer (group commit on a thread of its own, then the 200); the store reads
the payloads after its watermark, plans them, and moves the watermark in the transaction that
writes their plans. Rows at or below the watermark are then deleted here. A file of its own
means an intake process never waits for the store's write lock, nor the store for intake's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from router.checkpoint import Checkpointer
from router.db import connect as db_connect
from router.db import transaction, ts
from router.errors import StoreError
from router.logs import event

log = logging.getLogger("router.inbox")

PRUNE_INTERVAL_S = 1.0


def inbox_path(store_path: str) -> str:
    """Where the inbox of the store at `store_path` lives: beside it, `<store>.inbox`."""
    return f"{store_path}.inbox"


def connect(path: str, synchronous: str) -> sqlite3.Connection:
    """A connection to the inbox file, creating it (and its one table) if need be."""
    db = db_connect(path, synchronous)
    db.execute(
        "CREATE TABLE IF NOT EXISTS inbox (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " body BLOB NOT NULL, correlation_id TEXT NOT NULL, received_at TEXT NOT NULL)"
    )
    return db


class Inbox:
    """Writes accepted payloads durably, many per transaction; knows how many wait to be planned.

    `planned_through()` (called on the inbox thread) gives the store's watermark: the id of
    the last payload planned. `on_committed` (called on the event loop) hears of new payloads.
    """

    def __init__(self, path: str, synchronous: str, planned_through: Callable[[], int]) -> None:
        self.path = path
        self.synchronous = synchronous
        self.planned_through = planned_through
        self.on_committed: Callable[[], None] | None = None
        self.last_id = 0  # of the last payload committed
        self.backlog = 0  # payloads committed and not planned yet, as of the last commit or prune
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inbox")
        self._checkpointer = Checkpointer(path)
        self._pending: list[tuple[bytes, str, datetime, asyncio.Future[None]]] = []
        self._flush_scheduled = False
        self._pruner: asyncio.Task[None] | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._thread, self._open_sync)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc
        self._checkpointer.start()
        self._pruner = asyncio.create_task(self._prune_forever(), name="inbox prune")

    def _open_sync(self) -> None:
        self._db = connect(self.path, self.synchronous)
        self._count()

    async def aclose(self) -> None:
        """Close once what was handed to accept() is committed."""
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner
        await self._checkpointer.aclose()
        if self._db is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._db.close)
            self._db = None
        self._thread.shutdown(wait=True)

    async def accept(self, body: bytes, now: datetime, correlation_id: str) -> None:
        """Write one validated payload; return once that is committed (durable).

        Payloads that arrive together share one transaction (group commit).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((body, correlation_id, now, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.run_in_executor(self._thread, self._flush, loop)
        await future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._flush_scheduled = False  # before taking the list: a later arrival schedules anew
        batch, self._pending = self._pending, []
        if not batch:
            return
        error: StoreError | None = None
        try:
            if self._db is None:
                raise StoreError(f"{self.path}: the inbox is not open")
            with transaction(self._db) as db:
                db.executemany(
                    "INSERT INTO inbox (body, correlation_id, received_at) VALUES (?,?,?)",
                    [(body, cid, ts(now)) for body, cid, now, _ in batch],
                )
            self._count()
        except sqlite3.Error as exc:
            error = StoreError(f"{self.path}: {exc}")
        except StoreError as exc:
            error = exc
        loop.call_soon_threadsafe(_settled, [f for *_, f in batch], error, self.on_committed)

    def _count(self) -> None:
        """backlog = the last id written - the store's watermark (ids only grow)."""
        assert self._db is not None
        last = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name='inbox'").fetchone()
        self.last_id = last[0] if last else 0
        try:
            through = self.planned_through()
        except sqlite3.Error:
            return  # keep the last figure; the next commit or prune tries again
        self.backlog = max(0, self.last_id - through)

    async def _prune_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(PRUNE_INTERVAL_S)
            try:
                await loop.run_in_executor(self._thread, self._prune)
            except sqlite3.Error as exc:  # planned rows stay a little longer; no harm
                event(log, logging.WARNING, "inbox_prune_failed", path=self.path, error=str(exc))

    def _prune(self) -> None:
        """Delete what the store has planned (its plans are committed in the store's file)."""
        if self._db is None:
            return
        through = self.planned_through()
        self._db.execute("DELETE FROM inbox WHERE id<=?", (through,))
        self._count()


def _settled(
    futures: list[asyncio.Future[None]],
    error: BaseException | None,
    on_committed: Callable[[], None] | None,
) -> None:
    for future in futures:
        if future.done():  # the caller went away (request cancelled)
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(None)
    if error is None and on_committed is not None:
        on_committed()
