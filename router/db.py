"""SQLite files of the router (the store and the inbox): how they are opened, written, dated."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path


def connect(path: str, synchronous: str) -> sqlite3.Connection:
    """A connection in WAL mode, autocommit (transactions are explicit), usable off its thread.

    `wal_autocheckpoint=0`: checkpoints run on their own connection (router/checkpoint.py),
    never inside a commit that someone waits for.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA busy_timeout=5000")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous.upper()}")
    db.execute("PRAGMA wal_autocheckpoint=0")
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
