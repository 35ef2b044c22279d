"""router/store/files.py: how the SQLite file is opened, written in transactions, dated, watched
for deletion or replacement, and locked against a second router."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from router.errors import StoreError
from router.store.files import (
    JOURNAL_LIMIT_BYTES,
    FileIdentity,
    ProcessLock,
    connect,
    transaction,
    ts,
)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = connect(str(tmp_path / "deep" / "er" / "s.db"), "normal")  # folders made
    conn.execute("CREATE TABLE t (v INTEGER NOT NULL)")
    yield conn
    conn.close()


@pytest.mark.parametrize(("synchronous", "level"), [("normal", 1), ("full", 2), ("FULL", 2)])
def test_connect_sets_wal_the_sync_mode_and_the_journal_bound(
    tmp_path: Path, synchronous: str, level: int
) -> None:
    conn = connect(str(tmp_path / "s.db"), synchronous)
    try:
        pragma = lambda name: conn.execute(f"PRAGMA {name}").fetchone()[0]  # noqa: E731
        assert pragma("journal_mode") == "wal"
        assert pragma("synchronous") == level
        assert pragma("journal_size_limit") == JOURNAL_LIMIT_BYTES
        assert pragma("busy_timeout") == 5000
        assert conn.isolation_level is None and not conn.in_transaction  # autocommit
    finally:
        conn.close()


def test_a_transaction_commits_and_a_failed_one_leaves_nothing(db: sqlite3.Connection) -> None:
    with transaction(db):
        db.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.IntegrityError), transaction(db):
        db.execute("INSERT INTO t VALUES (2)")
        db.execute("INSERT INTO t VALUES (NULL)")
    with pytest.raises(KeyboardInterrupt), transaction(db):  # any exception, not only errors
        db.execute("INSERT INTO t VALUES (3)")
        raise KeyboardInterrupt
    assert not db.in_transaction  # usable again
    assert db.execute("SELECT v FROM t").fetchall() == [(1,)]


def test_a_transaction_takes_the_write_lock_at_begin(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    first, second = connect(path, "normal"), connect(path, "normal")
    second.execute("PRAGMA busy_timeout=0")
    try:
        with transaction(first):
            with pytest.raises(sqlite3.OperationalError, match="locked"), transaction(second):
                pass  # BEGIN IMMEDIATE: refused before any statement
            assert not second.in_transaction
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        (None, None),
        (datetime(2026, 11, 23, 7, 0, tzinfo=UTC), "2026-11-23T07:00:00+00:00"),
        (
            datetime(2026, 11, 23, 9, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2))),
            "2026-11-23T07:00:00.123456+00:00",  # converted to UTC, sortable as text
        ),
    ],
)
def test_ts_is_iso_8601_in_utc(value: datetime | None, stored: str | None) -> None:
    assert ts(value) == stored


def test_file_identity_notices_a_deleted_file_and_says_it_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"x")
    identity = FileIdentity(str(path))
    assert identity.lost() is None
    path.unlink()
    assert identity.lost() == f"{path} was deleted while alert-router had it open"
    assert identity.lost() == f"{path} was deleted while alert-router had it open"
    assert [r.getMessage() for r in caplog.records] == ["state_file_lost"]  # logged once
    assert caplog.records[0].levelname == "ERROR"


def test_file_identity_notices_a_replaced_file(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"x")
    identity = FileIdentity(str(path))
    keep = os.open(path, os.O_RDONLY)  # the old inode stays alive: a new one cannot reuse it
    try:
        (tmp_path / "new").write_bytes(b"y")
        os.replace(tmp_path / "new", path)
        assert identity.lost() == (
            f"{path} was replaced by another file while alert-router had it open"
        )
    finally:
        os.close(keep)


def test_file_identity_of_a_missing_file_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=f"^{tmp_path}/none.db: No such file or directory$"):
        FileIdentity(str(tmp_path / "none.db"))


def test_the_process_lock_refuses_a_second_holder_and_names_the_first(tmp_path: Path) -> None:
    store = str(tmp_path / "s.db")
    first, second = ProcessLock(store), ProcessLock(store)
    first.acquire()
    try:
        assert Path(f"{store}.lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(StoreError) as refused:
            second.acquire()  # flock is per open file: the same process counts as another
        assert str(refused.value) == (
            f"{store}.lock: another alert-router (pid {os.getpid()}) uses this store; stop it"
            " first, or give this one its own storage.path"
        )
    finally:
        first.release()
    second.acquire()  # free once released
    second.release()
    second.release()  # nothing held: nothing done


def test_the_process_lock_in_a_folder_it_cannot_make(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    lock = ProcessLock(str(tmp_path / "file" / "s.db"))  # a file where a folder should be
    with pytest.raises(StoreError, match=r"storage\.path must be in a folder that alert-router"):
        lock.acquire()
