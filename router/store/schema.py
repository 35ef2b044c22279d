"""The store's SQLite schema, version by version, and the upgrade of a file made by an earlier one."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

from router.errors import StoreError
from router.store.files import transaction
from router.store.rows import pack

INBOX_COLUMNS = ["id", "body", "correlation_id", "received_at"]

SCHEMA = [
    # version 1
    """
    CREATE TABLE alerts (
        fingerprint TEXT PRIMARY KEY,
        labels TEXT NOT NULL,
        annotations TEXT NOT NULL,
        status TEXT NOT NULL,
        starts_at TEXT NOT NULL,
        ends_at TEXT,
        generator_url TEXT NOT NULL,
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL,
        inhibited_by TEXT,
        receivers TEXT NOT NULL
    );
    CREATE INDEX alerts_status ON alerts(status);
    CREATE TABLE incidents (
        id TEXT PRIMARY KEY,
        receiver TEXT NOT NULL,
        am_receiver TEXT NOT NULL,
        group_key TEXT NOT NULL,
        status TEXT NOT NULL,
        opened_at TEXT NOT NULL,
        resolved_at TEXT,
        alerts TEXT NOT NULL,
        notified TEXT,
        last_notified_at TEXT,
        group_labels TEXT NOT NULL,
        common_labels TEXT NOT NULL,
        common_annotations TEXT NOT NULL,
        external_url TEXT NOT NULL,
        truncated_alerts INTEGER NOT NULL,
        acked_by TEXT,
        acked_at TEXT
    );
    CREATE UNIQUE INDEX incidents_open ON incidents(receiver, am_receiver, group_key)
        WHERE status = 'firing';
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        incident_id TEXT NOT NULL REFERENCES incidents(id),
        receiver TEXT NOT NULL,
        channel TEXT NOT NULL,
        channel_index INTEGER NOT NULL,
        reason TEXT NOT NULL,
        view TEXT NOT NULL,
        correlation_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'queued',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        last_error TEXT,
        sent_at TEXT,
        message_ref TEXT
    );
    CREATE INDEX outbox_due ON outbox(state, next_attempt_at);
    CREATE INDEX outbox_incident ON outbox(incident_id);
    """,
    # version 2: the message each channel posted for an incident, to edit it later
    """
    CREATE TABLE messages (
        incident_id TEXT NOT NULL REFERENCES incidents(id),
        receiver TEXT NOT NULL,
        channel TEXT NOT NULL,
        channel_index INTEGER NOT NULL,
        ref TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (incident_id, receiver, channel, channel_index)
    );
    """,
    # version 3: who acknowledged where and how, the silence made, escalation
    """
    ALTER TABLE incidents ADD COLUMN ack_via TEXT NOT NULL DEFAULT '';
    ALTER TABLE incidents ADD COLUMN ack_comment TEXT NOT NULL DEFAULT '';
    ALTER TABLE incidents ADD COLUMN silence_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE incidents ADD COLUMN escalated_at TEXT;
    ALTER TABLE incidents ADD COLUMN escalated_to TEXT NOT NULL DEFAULT '';
    CREATE INDEX messages_ref ON messages(channel, ref);
    """,
    # version 4: payloads accepted (committed, answered 200) and not planned yet
    """
    CREATE TABLE inbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        body BLOB NOT NULL,
        correlation_id TEXT NOT NULL,
        received_at TEXT NOT NULL,
        failed TEXT
    );
    """,
    # version 5: the inbox moved to a file of its own (`<path>.inbox`, until version 7); here,
    # its watermark and the payloads that could not be planned, set aside with why; the rows
    # that waited are carried into version 7's inbox table
    """
    CREATE TABLE inbox_planned (through INTEGER NOT NULL);
    INSERT INTO inbox_planned VALUES (0);
    CREATE TABLE set_aside (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        body BLOB NOT NULL,
        correlation_id TEXT NOT NULL,
        received_at TEXT NOT NULL,
        error TEXT NOT NULL
    );
    INSERT INTO set_aside (body, correlation_id, received_at, error)
        SELECT body, correlation_id, received_at, failed FROM inbox WHERE failed IS NOT NULL;
    ALTER TABLE inbox RENAME TO inbox_v4;
    """,
    # version 6: destinations the service moved (a Telegram group upgraded to a supergroup),
    # so that messages go to the new id across restarts until the config names it
    """
    CREATE TABLE moved_chats (
        channel TEXT NOT NULL,
        old_id TEXT NOT NULL,
        new_id TEXT NOT NULL,
        moved_at TEXT NOT NULL,
        PRIMARY KEY (channel, old_id)
    );
    """,
]


INBOX_VERSION = len(SCHEMA) + 1  # version 7: _inbox_into_the_store
# version 8: an outbox row's view (the whole rendered incident, several KiB) is written once to
# `views`; the outbox row, rewritten at each delivery state change, keeps only its id
VIEWS = """
    CREATE TABLE views (id INTEGER PRIMARY KEY AUTOINCREMENT, view TEXT NOT NULL);
    CREATE TABLE outbox_new (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        incident_id TEXT NOT NULL REFERENCES incidents(id),
        receiver TEXT NOT NULL,
        channel TEXT NOT NULL,
        channel_index INTEGER NOT NULL,
        reason TEXT NOT NULL,
        view_id INTEGER NOT NULL REFERENCES views(id),
        correlation_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'queued',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        last_error TEXT,
        sent_at TEXT,
        message_ref TEXT
    );
    INSERT INTO views (id, view) SELECT id, view FROM outbox;
    INSERT INTO outbox_new SELECT id, incident_id, receiver, channel, channel_index, reason, id,
        correlation_id, created_at, state, attempts, next_attempt_at, last_error, sent_at,
        message_ref FROM outbox;
    DROP TABLE outbox;
    ALTER TABLE outbox_new RENAME TO outbox;
    CREATE INDEX outbox_due ON outbox(state, next_attempt_at);
    CREATE INDEX outbox_incident ON outbox(incident_id);
"""
# version 9: a claim (the oldest due rows) walks the queued rows in id order and stops at its
# limit, instead of sorting every due row; sent and dead rows are in no index of state
OUTBOX_QUEUED = """
    DROP INDEX outbox_due;
    CREATE INDEX outbox_queued ON outbox(id, next_attempt_at, channel) WHERE state = 'queued';
"""


def _packed_inbox(db: sqlite3.Connection) -> None:
    """Schema version 10: inbox bodies and views are written packed (router.store.rows.pack);
    the payloads waiting in the inbox are packed here, one at a time as SQLite hands each row
    to `pack` (views written before stay text)."""
    db.create_function("pack", 1, pack, deterministic=True)
    db.execute("UPDATE inbox SET body=pack(body)")


# versions 8, 9, ...: a script, or a function run in the transaction that sets the version
AFTER_INBOX: list[str | Callable[[sqlite3.Connection], None]] = [
    VIEWS,
    OUTBOX_QUEUED,
    _packed_inbox,
]
SCHEMA_VERSION = INBOX_VERSION + len(AFTER_INBOX)


def old_inbox_path(store_path: str) -> str:
    """Where schema versions 5-6 kept the inbox: a file of its own beside the store."""
    return f"{store_path}.inbox"


def migrate(db: sqlite3.Connection, path: str) -> None:
    """Bring the file at `path` (open as `db`) to SCHEMA_VERSION, each version in a transaction.

    Raises StoreError if the file is of a newer version than this alert-router knows, or if an
    earlier version's inbox file cannot be read (see _inbox_into_the_store).
    """
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: schema version {version} is newer than this alert-router knows "
            f"({SCHEMA_VERSION}); upgrade alert-router or use another storage.path"
        )
    for number, script in enumerate(SCHEMA[version:], start=version + 1):
        db.executescript(f"BEGIN;{script};PRAGMA user_version={number};COMMIT;")
    if version < INBOX_VERSION:
        _inbox_into_the_store(db, path)
    for number, step in enumerate(AFTER_INBOX, start=INBOX_VERSION + 1):
        if version >= number:
            continue
        if isinstance(step, str):
            db.executescript(f"BEGIN;{step};PRAGMA user_version={number};COMMIT;")
        else:
            with transaction(db):
                step(db)
                db.execute(f"PRAGMA user_version={number}")
    old = old_inbox_path(path)
    for leftover in (old, f"{old}-wal", f"{old}-shm"):  # carried over by the migration
        with contextlib.suppress(FileNotFoundError):
            os.unlink(leftover)


def _inbox_into_the_store(db: sqlite3.Connection, path: str) -> None:
    """Schema version 7: the inbox becomes a table of the store's file, the watermark a column
    of its own table (`planner.watermark`).

    Payloads that waited in version 4's inbox table or in versions 5-6's inbox file beside
    the store (`<path>.inbox`, past its watermark) are carried into the table, in order, in
    the transaction that sets the version: nothing accepted is lost by an upgrade. Raises
    StoreError if that file is not an alert-router inbox (another program's file).
    """
    old = old_inbox_path(path)
    with contextlib.ExitStack() as stack:
        carried: Iterable[tuple[Any, ...]] = ()  # a cursor: read row by row as inserted
        if os.path.exists(old):
            try:
                inbox = stack.enter_context(contextlib.closing(sqlite3.connect(old)))
                columns = [row[1] for row in inbox.execute("PRAGMA table_info(inbox)")]
                if columns and columns != INBOX_COLUMNS:
                    raise sqlite3.DatabaseError(
                        f"not an alert-router inbox (its table inbox has {columns})"
                    )
                (through,) = db.execute("SELECT through FROM inbox_planned").fetchone()
                if columns:
                    carried = inbox.execute(
                        "SELECT body, correlation_id, received_at FROM inbox WHERE id>?"
                        " ORDER BY id",
                        (through,),
                    )
            except sqlite3.DatabaseError as exc:
                raise StoreError(
                    f"{old}: {exc}: the inbox of an earlier alert-router (payloads accepted and"
                    " not planned yet) cannot be read; move it aside to start without those"
                    " payloads"
                ) from exc
        with transaction(db):
            db.execute(
                "CREATE TABLE inbox (id INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL,"
                " correlation_id TEXT NOT NULL, received_at TEXT NOT NULL)"
            )
            if db.execute("SELECT 1 FROM sqlite_master WHERE name='inbox_v4'").fetchone():
                db.execute(
                    "INSERT INTO inbox (body, correlation_id, received_at) SELECT body,"
                    " correlation_id, received_at FROM inbox_v4 WHERE failed IS NULL ORDER BY id"
                )
                db.execute("DROP TABLE inbox_v4")
            db.executemany(
                "INSERT INTO inbox (body, correlation_id, received_at) VALUES (?,?,?)", carried
            )
            db.execute("CREATE TABLE planner (watermark INTEGER NOT NULL)")
            db.execute("INSERT INTO planner VALUES (0)")
            db.execute("DROP TABLE inbox_planned")
            db.execute(f"PRAGMA user_version={INBOX_VERSION}")
