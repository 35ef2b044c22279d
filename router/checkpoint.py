"""WAL checkpoints of one SQLite file, on a thread and a connection of their own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

from router.logs import event

log = logging.getLogger("router.store")

CHECKPOINT_INTERVAL_S = 1.0
WAL_QUIET_S = 2.0  # no commit for this long: the WAL file may be cut back (see Checkpointer.once)
WAL_KEEP_BYTES = 16 * 1024 * 1024
WAL_MAX_BYTES = 1024 * 1024 * 1024


class Checkpointer:
    """Copies a WAL into its database file every second, never inside a commit someone waits for.

    The connections that write set `wal_autocheckpoint=0`: an automatic checkpoint (and its
    fsync) would otherwise run inside whichever commit crossed the threshold.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._db: sqlite3.Connection | None = None
        self._checkpointed = 0  # the WAL's mtime when a checkpoint last copied all of it
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._forever(), name=f"checkpoint {self.path}")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._db is not None:
            self._thread.submit(self._db.close)  # on the thread that made it
        self._thread.shutdown(wait=True)
        self._db = None

    async def _forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL_S)
            try:
                await loop.run_in_executor(self._thread, self.once)
            except sqlite3.Error as exc:  # the next turn tries again; commits are unaffected
                event(log, logging.WARNING, "checkpoint_failed", path=self.path, error=str(exc))

    def once(self) -> None:
        """Copy the WAL into the database file without holding writers back (PASSIVE).

        SQLite starts the WAL over only when a checkpoint copied all of it and nothing was
        written since, which steady writes never allow: the file grows. Starting it over by
        force (RESTART, TRUNCATE) holds every writer back while the disk syncs and cuts the
        file, 0.1-1 s on a slow disk, so it is done when the file has been quiet for
        WAL_QUIET_S, or, past WAL_MAX_BYTES, even under load.
        """
        try:
            wal = os.stat(self.path + "-wal")
        except FileNotFoundError:
            return
        if wal.st_mtime_ns == self._checkpointed and wal.st_size <= WAL_KEEP_BYTES:
            return  # nothing written since the last complete checkpoint: no work, no fsync
        if self._db is None:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout=5000")
        db = self._db
        busy, frames, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        quiet = time.time() - wal.st_mtime_ns / 1e9 >= WAL_QUIET_S
        if wal.st_size > WAL_MAX_BYTES or (quiet and wal.st_size > WAL_KEEP_BYTES):
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        elif not busy and frames == copied:
            self._checkpointed = wal.st_mtime_ns
