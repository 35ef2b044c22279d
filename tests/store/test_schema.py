"""router/store/schema.py: a new file gets the whole schema; a file of an earlier version is
brought up to date with what it held (test_planner.py plans what an upgrade carried over)."""

from __future__ import annotations

import contextlib
import sqlite3
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from router.errors import StoreError
from router.store.rows import unpack
from router.store.schema import (
    AFTER_INBOX,
    INBOX_VERSION,
    SCHEMA,
    SCHEMA_VERSION,
    migrate,
    old_inbox_path,
)

T = "2026-11-23T07:00:00+00:00"
TABLES = {
    "alerts",
    "incidents",
    "outbox",
    "views",
    "messages",
    "inbox",
    "planner",
    "set_aside",
    "moved_chats",
    "sqlite_sequence",
}


@contextlib.contextmanager
def store_file(path: Path, version: int = 0) -> Iterator[sqlite3.Connection]:
    """A store file at schema `version` (0: empty), as that version's alert-router left it."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        for number, script in enumerate(SCHEMA[:version], start=1):
            db.executescript(f"BEGIN;{script};PRAGMA user_version={number};COMMIT;")
        yield db


def tables(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_a_new_file_gets_every_table_and_a_zero_watermark(tmp_path: Path) -> None:
    with store_file(tmp_path / "s.db") as db:
        migrate(db, str(tmp_path / "s.db"))
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert SCHEMA_VERSION == INBOX_VERSION + len(AFTER_INBOX) == len(SCHEMA) + 1 + 3
        assert tables(db) == TABLES
        assert db.execute("SELECT watermark FROM planner").fetchall() == [(0,)]
        outbox = [r[1] for r in db.execute("PRAGMA table_info(outbox)")]
        assert "view_id" in outbox and "view" not in outbox
        schema = db.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
        migrate(db, str(tmp_path / "s.db"))  # a second time: nothing changes
        assert db.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall() == schema


def test_a_newer_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with store_file(path) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
        with pytest.raises(StoreError) as refused:
            migrate(db, str(path))
        assert str(refused.value) == (
            f"{path}: schema version {SCHEMA_VERSION + 1} is newer than this alert-router knows"
            f" ({SCHEMA_VERSION}); upgrade alert-router or use another storage.path"
        )
        assert tables(db) == set()


def test_version_4s_inbox_is_carried_and_its_failed_rows_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with store_file(path, 4) as db:
        db.executemany(
            "INSERT INTO inbox (body, correlation_id, received_at, failed) VALUES (?,?,?,?)",
            [
                (b"{1}", "waiting-1", T, None),
                (b"{}", "failed", T, "alerts: field required"),
                (b"{2}", "waiting-2", T, None),
            ],
        )
        migrate(db, str(path))
        assert tables(db) == TABLES
        rows = db.execute("SELECT id, body, correlation_id FROM inbox ORDER BY id").fetchall()
        assert [(i, unpack(body), c) for i, body, c in rows] == [  # packed since version 10
            (1, b"{1}", "waiting-1"),
            (2, b"{2}", "waiting-2"),
        ]
        assert db.execute("SELECT correlation_id, error FROM set_aside").fetchall() == [
            ("failed", "alerts: field required")
        ]


def test_version_6s_inbox_file_is_carried_past_its_watermark_then_removed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    with store_file(path, 6) as db:
        db.execute("UPDATE inbox_planned SET through=1")
    old = old_inbox_path(str(path))
    assert old == f"{path}.inbox"
    with contextlib.closing(sqlite3.connect(old)) as inbox, inbox:
        inbox.execute(
            "CREATE TABLE inbox (id INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL,"
            " correlation_id TEXT NOT NULL, received_at TEXT NOT NULL)"
        )
        inbox.executemany(
            "INSERT INTO inbox (body, correlation_id, received_at) VALUES (?,?,?)",
            [(b"a", "planned", T), (b"b", "waiting", T), (b"c", "also", T)],
        )
    Path(f"{old}-shm").write_bytes(b"")
    with store_file(path) as db:
        migrate(db, str(path))
        assert db.execute("SELECT correlation_id FROM inbox ORDER BY id").fetchall() == [
            ("waiting",),
            ("also",),
        ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.db"]  # the old file's gone


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"not a database at all, but long enough to be read" * 20, "file is not a database"),
        (
            "CREATE TABLE inbox (id INTEGER PRIMARY KEY, payload BLOB)",
            "not an alert-router inbox (its table inbox has ['id', 'payload'])",
        ),
    ],
)
def test_an_inbox_file_that_is_not_ours_stops_the_upgrade(
    tmp_path: Path, content: bytes | str, error: str
) -> None:
    path = tmp_path / "s.db"
    old = old_inbox_path(str(path))
    if isinstance(content, bytes):
        Path(old).write_bytes(content)
    else:
        with contextlib.closing(sqlite3.connect(old)) as other, other:
            other.execute(content)
    with store_file(path, 6) as db:
        with pytest.raises(StoreError) as refused:
            migrate(db, str(path))
        assert str(refused.value) == (
            f"{old}: {error}: the inbox of an earlier alert-router (payloads accepted and not"
            " planned yet) cannot be read; move it aside to start without those payloads"
        )
        assert db.execute("PRAGMA user_version").fetchone() == (6,)  # nothing half-done
    assert Path(old).exists()


def test_outbox_views_move_to_their_own_table(tmp_path: Path) -> None:
    # Up to version 7 an outbox row held its view; version 8 keeps views apart, ids kept (as
    # text: views written before version 10 are not packed); version 9 indexes queued rows.
    path = tmp_path / "s.db"
    with store_file(path, 6) as db:
        db.execute(
            "INSERT INTO incidents (id, receiver, am_receiver, group_key, status, opened_at,"
            " alerts, group_labels, common_labels, common_annotations, external_url,"
            " truncated_alerts) VALUES ('k3v9x','r','am','{}:{}','firing',?,'[]','{}','{}',"
            "'{}','',0)",
            (T,),
        )
        db.executemany(
            "INSERT INTO outbox (incident_id, receiver, channel, channel_index, reason, view,"
            " correlation_id, created_at, next_attempt_at, state) VALUES"
            " ('k3v9x','r','slack',0,?,?,'c',?,?,?)",
            [("first", '{"v":1}', T, T, "sent"), ("resolved", '{"v":2}', T, T, "queued")],
        )
        migrate(db, str(path))
        assert db.execute("SELECT id, view FROM views ORDER BY id").fetchall() == [
            (1, '{"v":1}'),
            (2, '{"v":2}'),
        ]
        assert db.execute(
            "SELECT id, view_id, reason, state FROM outbox ORDER BY id"
        ).fetchall() == [(1, 1, "first", "sent"), (2, 2, "resolved", "queued")]
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"outbox_queued", "outbox_incident"} <= indexes and "outbox_due" not in indexes


BODY = b'{"alerts": []}' + b" " * (512 * 1024)  # a waiting payload; 64 of them wait: 32 MiB


def migrate_holding_one_body_at_a_time(db: sqlite3.Connection, path: Path) -> None:
    """migrate(), asserting that it held less than 4 BODYs at once (tracemalloc) and that the
    64 waiting BODYs are in the inbox, packed, in order."""
    tracemalloc.start()
    try:
        migrate(db, str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(BODY), f"{peak} bytes held at once"
    rows = db.execute("SELECT correlation_id, body FROM inbox ORDER BY id").fetchall()
    assert [(cid, unpack(b)) for cid, b in rows] == [(f"c{n}", BODY) for n in range(64)]


def test_version_10_packs_the_waiting_payloads_one_at_a_time(tmp_path: Path) -> None:
    # It read every waiting body at once (fetchall) and packed them all before writing: an
    # upgrade's memory was the inbox's size (up to server.max_backlog bodies of
    # server.max_body_bytes), for a router that had stopped with a backlog.
    path = tmp_path / "s.db"
    with store_file(path) as db:
        migrate(db, str(path))
        db.executemany(
            "INSERT INTO inbox (body, correlation_id, received_at) VALUES (?,?,?)",
            [(BODY, f"c{n}", T) for n in range(64)],  # as version 9 kept them
        )
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION - 1}")
        migrate_holding_one_body_at_a_time(db, path)
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def test_version_6s_inbox_file_is_carried_one_payload_at_a_time(tmp_path: Path) -> None:
    # It read every payload waiting in the file at once (fetchall) before inserting them: an
    # upgrade's memory was the size of the backlog the previous version left.
    path = tmp_path / "s.db"
    with store_file(path, 6) as db:
        pass
    with contextlib.closing(sqlite3.connect(old_inbox_path(str(path)))) as inbox, inbox:
        inbox.execute(
            "CREATE TABLE inbox (id INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL,"
            " correlation_id TEXT NOT NULL, received_at TEXT NOT NULL)"
        )
        inbox.executemany(
            "INSERT INTO inbox (body, correlation_id, received_at) VALUES (?,?,?)",
            [(BODY, f"c{n}", T) for n in range(64)],
        )
    with store_file(path) as db:
        migrate_holding_one_body_at_a_time(db, path)
