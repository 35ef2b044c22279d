"""SQLite state: the inbox, alerts, incidents, outbox; plans the inbox's payloads, on one writer thread."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import secrets
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson

from router.db import FileIdentity, ProcessLock, connect, transaction, ts
from router.errors import StoreError
from router.models import IncidentView, WebhookPayload
from router.pipeline import Pipeline
from router.state import AlertState, IncidentState, Plan, State

T = TypeVar("T")

# Short ids people type on a phone: no 0/o, 1/l/i look-alikes.
ID_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
ID_LENGTH = 5
# Planning runs in slices so that intake commits (the webhook's 200) never wait long behind it.
PLAN_BATCH = 64
PLAN_SLICE = timedelta(milliseconds=4)
PLAN_RETRY = timedelta(seconds=1)
PROBE_INTERVAL = timedelta(seconds=1)  # after a failed commit, try a probe commit this often
PROBE_BYTES = 64 * 1024  # written (and deleted) by the probe that sees a full disk recover
INSERT_ROWS = 500  # inbox rows per INSERT statement (SQLite allows 32,766 bound values)
INBOX_COLUMNS = ["id", "body", "correlation_id", "received_at"]
# body, correlation id, received at, the payload as intake parsed it, the 200's wait
Pending = tuple[bytes, str, datetime, WebhookPayload | None, "asyncio.Future[None]"]

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


SCHEMA_VERSION = len(SCHEMA) + 1  # version 7 is _inbox_into_the_store


def _inbox_into_the_store(db: sqlite3.Connection, path: str) -> None:
    """Schema version 7: the inbox becomes a table of the store's file, the watermark a column
    of its own table (`planner.watermark`).

    Payloads that waited in version 4's inbox table or in versions 5-6's inbox file beside
    the store (`<path>.inbox`, past its watermark) are carried into the table, in order, in
    the transaction that sets the version: nothing accepted is lost by an upgrade. Raises
    StoreError if that file is not an alert-router inbox (another program's file).
    """
    old = _old_inbox_path(path)
    carried: list[tuple[Any, ...]] = []
    if os.path.exists(old):
        try:
            with contextlib.closing(sqlite3.connect(old)) as inbox:
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
                    ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"{old}: {exc}: the inbox of an earlier alert-router (payloads accepted and"
                " not planned yet) cannot be read; move it aside to start without those payloads"
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
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


def _move_watermark(db: sqlite3.Connection, row_id: int) -> None:
    """Set the watermark to `row_id` and delete the inbox rows it passed (in the caller's
    transaction, with the plans of those rows)."""
    db.execute("UPDATE planner SET watermark=?", (row_id,))
    db.execute("DELETE FROM inbox WHERE id<=?", (row_id,))


def _locked(exc: BaseException) -> bool:
    """Another connection holds the lock (SQLITE_BUSY): worth trying again shortly."""
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY


def _insert(db: sqlite3.Connection, rows: list[Pending]) -> int:
    """Insert `rows` into the inbox with one statement; the id of the last one."""
    values = ",".join(["(?,?,?)"] * len(rows))
    params = [v for body, cid, now, _, _ in rows for v in (body, cid, ts(now))]
    cursor = db.execute(
        f"INSERT INTO inbox (body, correlation_id, received_at) VALUES {values}", params
    )
    return int(cursor.lastrowid or 0)


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _old_inbox_path(store_path: str) -> str:
    """Where schema versions 5-6 kept the inbox: a file of its own beside the store."""
    return f"{store_path}.inbox"


@dataclass(frozen=True)
class OutboxRow:
    id: int
    incident_id: str
    receiver: str
    channel: str
    channel_index: int
    view: IncidentView
    correlation_id: str
    created_at: datetime
    attempts: int
    ref: str | None = None  # the message to edit, as the store knew it when the row was claimed

    @property
    def message_key(self) -> tuple[str, str, str, int]:
        """Which message this row concerns: one per incident and destination."""
        return (self.incident_id, self.receiver, self.channel, self.channel_index)


class Store:
    """The only owner of the SQLite file. Every call runs on one thread, in arrival order.

    `accept()` commits webhook payloads to the inbox table (payloads that arrive while a commit
    runs share the next one: group commit); planning reads the inbox past the `watermark` (the
    id of the last payload planned), and moves the watermark in the transaction that writes the
    plans, deleting the rows it planned.
    """

    def __init__(self, path: str | Path, *, synchronous: str = "normal") -> None:
        self.path = str(path)
        if self.path == ":memory:":
            raise StoreError("storage.path must be a file: alert-router keeps what it accepted")
        self.synchronous = synchronous.upper()
        self.state = State()
        self._pipeline: Pipeline | None = None
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._lock = ProcessLock(self.path)
        self._file: FileIdentity | None = None
        self.watermark = 0  # the last inbox id planned (committed with its plan)
        self._last_id = 0  # the last inbox id committed
        self._parsed: dict[int, WebhookPayload] = {}  # payloads as intake parsed them, by id
        self._pending: list[Pending] = []
        self._committing = False
        self._idle = asyncio.Event()  # set while no inbox commit is running or waiting
        self._idle.set()
        self._failing: str | None = None  # the last inbox commit's error, until one succeeds
        self._planning_scheduled = False
        self._planning_paused = False
        self._closing = False
        self._prober: asyncio.Task[None] | None = None
        # Called on the event loop: (correlation id, plan) once a payload is planned and
        # committed; (correlation id or "", error) when planning fails.
        self.on_planned: Callable[[str, Plan], None] | None = None
        self.on_failed: Callable[[str, str], None] | None = None

    @property
    def backlog(self) -> int:
        """Payloads accepted and not planned yet."""
        return max(0, self._last_id - self.watermark)

    # ------------------------------------------------------------ lifecycle

    async def open(self, pipeline_factory: Callable[[Callable[[], str]], Pipeline]) -> None:
        """Load the state; payloads a previous run accepted and did not plan are planned next."""
        await self._run(self._open_sync)
        pipeline = pipeline_factory(self.new_incident_id)
        await self._run(self._attach_sync, pipeline)
        self._prober = asyncio.create_task(self._probe_forever(), name="store probe")
        self._schedule_planning(asyncio.get_running_loop())

    async def use_pipeline(self, pipeline: Pipeline) -> None:
        """Switch to a pipeline built from a new config (reload)."""
        await self._run(self._attach_sync, pipeline)

    async def aclose(self) -> None:
        """Close after what is queued on the store thread; unplanned payloads wait in the inbox.

        The WAL is copied into the database file and cut back first, so that the file alone
        holds everything once the router has stopped.
        """
        await self._idle.wait()  # what was handed to accept() is committed (or refused) first
        self._closing = True
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
        if self._db is not None:
            with contextlib.suppress(StoreError):
                await self._run(self._db.execute, "PRAGMA wal_checkpoint(TRUNCATE)")
            await self._run(self._db.close)
        self._db = None
        self._thread.shutdown(wait=True)
        self._lock.release()

    def files_lost(self) -> list[str]:
        """Why the store's file is no longer the one opened (deleted, replaced); empty while it
        is in place."""
        problem = self._file.lost() if self._file is not None else None
        return [problem] if problem is not None else []

    def problem(self) -> str | None:
        """Why a payload cannot be accepted now (one line), or None if it can: the file is
        lost, or the last commit to the inbox failed (disk full, I/O error) and no commit or
        probe since has succeeded."""
        lost = self.files_lost()
        return lost[0] if lost else self._failing

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)
        except (sqlite3.Error, OSError) as exc:  # OSError: making the folder, the lock file
            raise self._failure(exc) from exc

    def _failure(self, exc: sqlite3.Error | OSError) -> StoreError:
        if isinstance(exc, OSError):
            return StoreError(f"{exc.filename or self.path}: {exc.strerror}")
        return StoreError(f"{self.path}: {exc}")

    def _open_sync(self) -> None:
        self._lock.acquire()
        try:
            self._open_file()
        except sqlite3.DatabaseError as exc:
            self._lock.release()
            if isinstance(exc, sqlite3.OperationalError):  # could not open, locked, read-only
                raise StoreError(
                    f"{self.path}: {exc}: check that alert-router's user can write this file"
                    " and its folder"
                ) from exc
            raise StoreError(
                f"{self.path}: {exc}: the store (alerts, incidents, notifications) cannot be"
                " read; restore it from a backup, or move it aside to start with an empty state"
            ) from exc
        except BaseException:
            self._lock.release()
            raise

    def _open_file(self) -> None:
        db = connect(self.path, self.synchronous)
        db.execute("PRAGMA foreign_keys=ON")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {version} is newer than this alert-router knows "
                f"({SCHEMA_VERSION}); upgrade alert-router or use another storage.path"
            )
        self._file = FileIdentity(self.path)
        for number, script in enumerate(SCHEMA[version:], start=version + 1):
            db.executescript(f"BEGIN;{script};PRAGMA user_version={number};COMMIT;")
        if version < SCHEMA_VERSION:
            _inbox_into_the_store(db, self.path)
        old = _old_inbox_path(self.path)
        for leftover in (old, f"{old}-wal", f"{old}-shm"):  # carried over by the migration
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
        # A row claimed by a delivery worker that died is due again.
        db.execute("UPDATE outbox SET state='queued' WHERE state='sending'")
        self.watermark = db.execute("SELECT watermark FROM planner").fetchone()[0]
        last = db.execute("SELECT seq FROM sqlite_sequence WHERE name='inbox'").fetchone()
        self._last_id = max(self.watermark, last[0] if last else 0)
        self._db = db
        self.state = self._load_state()

    def _attach_sync(self, pipeline: Pipeline) -> None:
        pipeline.attach(self.state)
        self._pipeline = pipeline

    def _load_state(self) -> State:
        db = self._conn()
        state = State()
        for row in db.execute("SELECT * FROM alerts WHERE status='firing'"):
            state.alerts[row[0]] = _alert_from_row(row)
        for row in db.execute("SELECT * FROM incidents WHERE status='firing'"):
            incident = _incident_from_row(row)
            state.open(incident)
        return state

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("the store is not open")
        return self._db

    def new_incident_id(self) -> str:
        """A short id not used by any incident (called on the store thread)."""
        db = self._conn()
        while True:
            candidate = "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))
            if db.execute("SELECT 1 FROM incidents WHERE id=?", (candidate,)).fetchone() is None:
                return candidate

    # ------------------------------------------------------------ intake

    async def accept(
        self,
        body: bytes,
        now: datetime,
        correlation_id: str,
        payload: WebhookPayload | None = None,
    ) -> None:
        """Commit one validated payload to the inbox; return once that is committed (durable).

        `payload` is `body` as intake parsed it: planning uses it instead of parsing the body
        again. Payloads handed over while a commit runs share the next one. Raises StoreError
        if the commit fails or the file is lost (nothing is then accepted). Planning (route,
        inhibit, dedup, outbox) follows on the store thread, in arrival order, and each plan is
        handed to `on_planned` on the event loop.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((body, correlation_id, now, payload, future))
        if not self._committing:
            self._committing = True
            self._idle.clear()
            asyncio.get_running_loop().call_soon(self._commit_pending)
        await future

    def _commit_pending(self) -> None:
        """Commit what waits, one batch at a time, on the store thread (called on the loop)."""
        if not self._pending:
            self._committing = False
            self._idle.set()
            return
        batch, self._pending = self._pending, []
        future = asyncio.get_running_loop().run_in_executor(self._thread, self._commit_sync, batch)
        future.add_done_callback(lambda f: self._committed(batch, f))

    def _committed(self, batch: list[Pending], done: asyncio.Future[None]) -> None:
        exc = done.exception()
        error: StoreError | None = None
        if isinstance(exc, StoreError):
            error = exc
        elif isinstance(exc, (sqlite3.Error, OSError)):
            error = self._failure(exc)
            if not _locked(exc):
                self._failing = f"the last commit to the inbox failed: {error}"
        elif exc is not None:
            error = StoreError(f"{self.path}: {exc}")
        for *_, future in batch:
            if future.done():  # the caller went away (request cancelled)
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(None)
        loop = asyncio.get_running_loop()
        if error is None:
            self._schedule_planning(loop)
        self._commit_pending()

    def _commit_sync(self, batch: list[Pending]) -> None:
        """Insert the batch in one transaction (on the store thread)."""
        lost = self.files_lost()
        if lost:
            raise StoreError(lost[0])
        with transaction(self._conn()) as db:
            for start in range(0, len(batch), INSERT_ROWS):
                last = _insert(db, batch[start : start + INSERT_ROWS])
        first = last - len(batch) + 1
        for offset, (*_, payload, _future) in enumerate(batch):
            if payload is not None:
                self._parsed[first + offset] = payload
        self._last_id = last  # only once committed
        self._failing = None

    async def _probe_forever(self) -> None:
        """After a failed inbox commit: commit (and delete) PROBE_BYTES every PROBE_INTERVAL;
        success clears the failure, so that /readyz says ready again."""
        while True:
            await asyncio.sleep(PROBE_INTERVAL.total_seconds())
            if self._failing is not None and not self._pending:
                with contextlib.suppress(StoreError):
                    await self._run(self._probe_sync)
                    self._failing = None

    def _probe_sync(self) -> None:
        with transaction(self._conn()) as db:
            db.execute("CREATE TABLE IF NOT EXISTS probe (data BLOB)")
            db.execute("INSERT INTO probe VALUES (zeroblob(?))", (PROBE_BYTES,))
            db.execute("DELETE FROM probe")

    # ------------------------------------------------------------ planning

    def _schedule_planning(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._planning_scheduled and not self._closing:
            self._planning_scheduled = True
            self._thread.submit(self._plan_inbox, loop)

    def _plan_inbox(self, loop: asyncio.AbstractEventLoop) -> None:
        """Plan the oldest inbox payloads for at most PLAN_SLICE, then let other calls run.

        The watermark moves in the transaction that writes the plans. If the store fails,
        the payloads stay and planning is tried again later; if one payload cannot be planned
        (a bug), it is set aside with its error, and the others go on.
        """
        self._planning_scheduled = False
        if self._db is None or self._pipeline is None:
            return
        if self._planning_paused or self._closing:
            return
        try:
            rows = self._db.execute(
                "SELECT id, body, correlation_id, received_at FROM inbox WHERE id>?"
                " ORDER BY id LIMIT ?",
                (self.watermark, PLAN_BATCH),
            ).fetchall()
        except sqlite3.Error as exc:
            self._retry_later(loop, self._failure(exc))
            return
        if not rows:
            return
        steps = [self._inbox_step(*row) for row in rows]
        until = time.monotonic() + PLAN_SLICE.total_seconds()
        try:
            planned = self._transact_many(steps, until=until)
        except StoreError as exc:
            if isinstance(exc.__cause__, sqlite3.Error):
                self._retry_later(loop, exc)
                return
            planned = self._plan_one_by_one(loop, rows, steps)
        else:
            self._planned_through(rows[len(planned) - 1][0])
        if self.on_planned is not None and planned:
            done = [(row[2], plan) for row, plan in zip(rows, planned, strict=False)]
            loop.call_soon_threadsafe(_each, self.on_planned, done)  # one wake-up per slice
        if len(planned) < len(rows) or len(rows) == PLAN_BATCH:
            self._schedule_planning(loop)

    def _planned_through(self, row_id: int) -> None:
        """The watermark is committed at `row_id`: forget what intake parsed up to it."""
        for planned in range(self.watermark + 1, row_id + 1):
            self._parsed.pop(planned, None)
        self.watermark = row_id

    def _inbox_step(
        self, row_id: int, body: bytes, correlation_id: str, received_at: str
    ) -> tuple[Callable[[Pipeline], Plan], datetime]:
        now = datetime.fromisoformat(received_at)

        def step(p: Pipeline) -> Plan:
            payload = self._parsed.get(row_id) or WebhookPayload.model_validate_json(body)
            plan = p.ingest(payload, self.state, now, correlation_id)
            _move_watermark(self._conn(), row_id)
            return plan

        return step, now

    def _plan_one_by_one(
        self,
        loop: asyncio.AbstractEventLoop,
        rows: list[tuple[Any, ...]],
        steps: list[tuple[Callable[[Pipeline], Plan], datetime]],
    ) -> list[Plan]:
        """After a failed batch: each payload alone; one that cannot be planned is set aside."""
        planned: list[Plan] = []
        for (row_id, body, correlation_id, received_at), (step, now) in zip(
            rows, steps, strict=True
        ):
            try:
                planned.append(self._transact(step, now))
                self._planned_through(row_id)
            except StoreError as exc:
                if isinstance(exc.__cause__, sqlite3.Error):
                    self._retry_later(loop, exc)
                    break
                error = str(exc.__cause__ or exc)
                try:
                    with transaction(self._conn()) as db:
                        db.execute(
                            "INSERT INTO set_aside (body, correlation_id, received_at, error)"
                            " VALUES (?,?,?,?)",
                            (body, correlation_id, received_at, error),
                        )
                        _move_watermark(db, row_id)
                except sqlite3.Error as failure:
                    self._retry_later(loop, self._failure(failure))
                    break
                self._planned_through(row_id)
                if self.on_failed is not None:
                    loop.call_soon_threadsafe(self.on_failed, correlation_id, error)
                break  # the rows after it are planned by the next turn, in order
        return planned

    async def pending_alerts(self, correlation_id: str) -> int | None:
        """How many alerts a payload accepted and not planned yet has; None if not waiting."""
        return await self._run(self._pending_alerts_sync, correlation_id)

    def _pending_alerts_sync(self, correlation_id: str) -> int | None:
        row = (
            self._conn()
            .execute(
                "SELECT body FROM inbox WHERE id>? AND correlation_id=?",
                (self.watermark, correlation_id),
            )
            .fetchone()
        )
        if row is None:
            return None
        alerts = orjson.loads(row[0]).get("alerts")
        return len(alerts) if isinstance(alerts, list) else 0

    def _retry_later(self, loop: asyncio.AbstractEventLoop, exc: StoreError) -> None:
        """The store failed: keep the payloads in the inbox and try again in PLAN_RETRY."""
        self._planning_paused = True
        if self.on_failed is not None:
            loop.call_soon_threadsafe(self.on_failed, "", str(exc))
        loop.call_soon_threadsafe(
            loop.call_later, PLAN_RETRY.total_seconds(), self._resume_planning, loop
        )

    def _resume_planning(self, loop: asyncio.AbstractEventLoop) -> None:
        self._planning_paused = False
        self._schedule_planning(loop)

    async def sweep(self, now: datetime, correlation_id: str) -> Plan:
        return await self._run(
            self._transact, lambda p: p.sweep(self.state, now, correlation_id), now
        )

    def _transact(self, step: Callable[[Pipeline], Plan], now: datetime) -> Plan:
        return self._transact_many([(step, now)])[0]

    def _transact_many(
        self,
        steps: list[tuple[Callable[[Pipeline], Plan], datetime]],
        until: float | None = None,
    ) -> list[Plan]:
        """Run the steps and write their plans in one transaction; on any error, none of it.

        With `until` (a time.monotonic() deadline), the steps after it are left for later: the
        plans returned are those of the first steps, as many as were run.
        """
        db = self._conn()
        if self._pipeline is None:
            raise StoreError("no pipeline attached")
        try:
            db.execute("BEGIN IMMEDIATE")
            plans = []
            for step, now in steps:
                plan = step(self._pipeline)
                self._write(db, plan, now)
                plans.append(plan)
                if until is not None and time.monotonic() > until:
                    break
            db.execute("COMMIT")
        except Exception as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            # The in-memory state may hold half of the change: take it again from disk.
            self.state = self._load_state()
            self._pipeline = Pipeline(self._pipeline.config, self.new_incident_id)
            self._pipeline.attach(self.state)
            raise StoreError(f"cannot commit to {self.path}: {exc}") from exc
        return plans

    def _write(self, db: sqlite3.Connection, plan: Plan, now: datetime) -> None:
        db.executemany(
            "INSERT OR REPLACE INTO alerts VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    a.fingerprint,
                    _json(a.labels),
                    _json(a.annotations),
                    a.status,
                    ts(a.starts_at),
                    ts(a.ends_at),
                    a.generator_url,
                    ts(a.first_seen),
                    ts(a.last_seen),
                    a.inhibited_by,
                    _json(a.receivers),
                )
                for a in plan.alerts.values()
            ],
        )
        db.executemany(
            "INSERT OR REPLACE INTO incidents VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    i.id,
                    i.receiver,
                    i.am_receiver,
                    i.group_key,
                    i.status,
                    ts(i.opened_at),
                    ts(i.resolved_at),
                    _json(sorted(i.alerts)),
                    None if i.notified is None else _json(sorted(i.notified)),
                    ts(i.last_notified_at),
                    _json(i.group_labels),
                    _json(i.common_labels),
                    _json(i.common_annotations),
                    i.external_url,
                    i.truncated_alerts,
                    i.acked_by,
                    ts(i.acked_at),
                    i.ack_via,
                    i.ack_comment,
                    i.silence_id,
                    ts(i.escalated_at),
                    i.escalated_to,
                )
                for i in plan.incidents.values()
            ],
        )
        db.executemany(
            "INSERT INTO outbox (incident_id, receiver, channel, channel_index, reason, view,"
            " correlation_id, created_at, next_attempt_at) VALUES (?,?,?,?,?,?,?,?,?)",
            [
                (
                    o.incident_id,
                    *o.destination,
                    o.view.reason.value,
                    o.view.model_dump_json(),
                    o.view.correlation_id,
                    ts(now),
                    ts(now),
                )
                for o in plan.outbox
            ],
        )

    # ------------------------------------------------------------ acknowledgement

    async def incident(self, incident_id: str) -> IncidentState | None:
        """The incident with this id: the live one if open, else as stored; None if unknown."""
        return await self._run(self._incident_sync, incident_id)

    def _incident_sync(self, incident_id: str) -> IncidentState | None:
        live = self.state.open_incident(incident_id)
        if live is not None:
            return copy.deepcopy(live)
        row = self._conn().execute("SELECT * FROM incidents WHERE id=?", (incident_id,)).fetchone()
        return _incident_from_row(row) if row else None

    async def open_incidents(self) -> list[IncidentState]:
        return await self._run(lambda: [copy.deepcopy(i) for i in self.state.incidents.values()])

    async def incident_for_message(self, channel: str, ref: str) -> str | None:
        rows = await self._run(
            self._query,
            "SELECT incident_id FROM messages WHERE channel=? AND ref=?",
            (channel, ref),
        )
        return str(rows[0][0]) if rows else None

    async def set_ack(
        self,
        incident_id: str,
        expect: str | None,
        acked_by: str | None,
        now: datetime,
        correlation_id: str,
        **details: str,
    ) -> Plan | IncidentState | None:
        """Compare-and-set the ack of an open incident: if its `acked_by` is still `expect`, set
        it to `acked_by` (None: take the ack back) and queue the updates of every message.

        Returns the Plan written if this call won; a copy of the incident as it is if its ack was
        no longer `expect` (someone else acked or unacked first: nothing is written or queued);
        None if the incident is not open. The check and the write run on the store's one thread,
        the write in one transaction, so of two concurrent acks exactly one wins.
        """
        return await self._run(
            self._set_ack_sync, incident_id, expect, acked_by, now, correlation_id, details
        )

    def _set_ack_sync(
        self,
        incident_id: str,
        expect: str | None,
        acked_by: str | None,
        now: datetime,
        correlation_id: str,
        details: dict[str, str],
    ) -> Plan | IncidentState | None:
        current = self.state.open_incident(incident_id)
        if current is None:
            return None
        if current.acked_by != expect:
            return copy.deepcopy(current)

        def step(p: Pipeline) -> Plan:
            incident = self.state.open_incident(incident_id)
            assert incident is not None
            return p.set_ack(self.state, incident, acked_by, now, correlation_id, **details)

        return self._transact(step, now)

    # ------------------------------------------------------------ outbox

    async def claim_due(
        self, now: datetime, channels: list[str], limit: int = 100
    ) -> list[OutboxRow]:
        """Mark up to `limit` due rows of these channels as being sent; return them oldest first."""
        return await self._run(self._claim_due_sync, now, channels, limit)

    def _claim_due_sync(self, now: datetime, channels: list[str], limit: int) -> list[OutboxRow]:
        db = self._conn()
        marks = ",".join("?" * len(channels))
        rows = db.execute(
            "UPDATE outbox SET state='sending' WHERE id IN ("
            " SELECT id FROM outbox WHERE state='queued' AND next_attempt_at<=?"
            f" AND channel IN ({marks}) ORDER BY id LIMIT ?)"
            " RETURNING id, incident_id, receiver, channel, channel_index, view, correlation_id,"
            " created_at, attempts",
            (ts(now), *channels, limit),
        ).fetchall()
        refs: dict[tuple[str, str, str, int], str] = {}
        incident_ids = sorted({r[1] for r in rows})
        for start in range(0, len(incident_ids), 500):
            chunk = incident_ids[start : start + 500]
            for m in db.execute(
                "SELECT incident_id, receiver, channel, channel_index, ref FROM messages"
                f" WHERE incident_id IN ({','.join('?' * len(chunk))})",
                chunk,
            ):
                refs[(m[0], m[1], m[2], m[3])] = m[4]
        return sorted(
            (
                OutboxRow(
                    r[0],
                    r[1],
                    r[2],
                    r[3],
                    r[4],
                    IncidentView.model_validate_json(r[5]),
                    r[6],
                    datetime.fromisoformat(r[7]),
                    r[8],
                    refs.get((r[1], r[2], r[3], r[4])),
                )
                for r in rows
            ),
            key=lambda r: r.id,
        )

    async def mark_sent_many(self, sent: list[tuple[OutboxRow, str, datetime]]) -> None:
        await self._run(self._mark_sent_sync, sent)

    def _mark_sent_sync(self, sent: list[tuple[OutboxRow, str, datetime]]) -> None:
        with transaction(self._conn()) as db:
            for row, ref, now in sent:
                self._mark_one(db, row, ref, now)

    def _mark_one(self, db: sqlite3.Connection, row: OutboxRow, ref: str, now: datetime) -> None:
        db.execute(
            "UPDATE outbox SET state='sent', sent_at=?, message_ref=?, last_error=NULL,"
            " attempts=attempts+1 WHERE id=?",
            (ts(now), ref, row.id),
        )
        if ref:
            db.execute(
                "INSERT OR REPLACE INTO messages VALUES (?,?,?,?,?,?)",
                (*row.message_key, ref, ts(now)),
            )

    async def message_ref(self, row: OutboxRow) -> str | None:
        rows = await self._run(
            self._query,
            "SELECT ref FROM messages WHERE incident_id=? AND receiver=? AND channel=? AND channel_index=?",
            row.message_key,
        )
        return str(rows[0][0]) if rows else None

    async def defer(
        self, row: OutboxRow, error: str, until: datetime, *, attempted: bool = True
    ) -> None:
        """Retry `row` at `until`, and hold every later row of its destination until then too,
        so that a destination's notifications keep their order."""
        await self._run(self._defer_sync, row, error, until, int(attempted))

    def _defer_sync(self, row: OutboxRow, error: str, until: datetime, attempted: int) -> None:
        with transaction(self._conn()) as db:
            db.execute(
                "UPDATE outbox SET state='queued', last_error=?, next_attempt_at=?,"
                " attempts=attempts+? WHERE id=?",
                (error, ts(until), attempted, row.id),
            )
            db.execute(
                "UPDATE outbox SET state='queued', next_attempt_at=max(next_attempt_at, ?)"
                " WHERE receiver=? AND channel=? AND channel_index=? AND state IN ('queued','sending')"
                " AND id>?",
                (ts(until), row.receiver, row.channel, row.channel_index, row.id),
            )

    async def mark_dead(self, row: OutboxRow, error: str) -> None:
        await self._run(
            self._exec,
            "UPDATE outbox SET state='dead', last_error=?, attempts=attempts+1 WHERE id=?",
            (error, row.id),
        )

    async def save_moved_chat(self, channel: str, old_id: str, new_id: str, now: datetime) -> None:
        """Remember that `channel`'s destination `old_id` is now `new_id` (replacing a move of
        the same id). Raises StoreError if it cannot be written."""
        await self._run(
            self._exec,
            "INSERT OR REPLACE INTO moved_chats VALUES (?,?,?,?)",
            (channel, old_id, new_id, ts(now)),
        )

    async def moved_chats(self) -> dict[str, dict[str, str]]:
        """Every move remembered: channel kind -> {old id: new id}."""
        moved: dict[str, dict[str, str]] = {}
        for channel, old_id, new_id in await self._run(
            self._query, "SELECT channel, old_id, new_id FROM moved_chats", ()
        ):
            moved.setdefault(channel, {})[old_id] = new_id
        return moved

    def _exec(self, sql: str, args: tuple[Any, ...]) -> None:
        self._conn().execute(sql, args)

    # ------------------------------------------------------------ reads

    async def check_writable(self) -> None:
        """Take the write lock and let it go: raises StoreError if the file cannot be written."""
        await self._run(self._check_writable_sync)

    def _check_writable_sync(self) -> None:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        db.execute("ROLLBACK")

    async def outbox_stats(self, now: datetime) -> tuple[int, float, int]:
        """(waiting notifications, age in seconds of the oldest waiting one, dead letters)."""
        rows = await self._run(
            self._query,
            "SELECT sum(state IN ('queued','sending')), min(CASE WHEN state IN ('queued','sending')"
            " THEN created_at END), sum(state='dead') FROM outbox",
            (),
        )
        waiting, oldest, dead = rows[0]
        age = (now - datetime.fromisoformat(oldest)).total_seconds() if oldest else 0.0
        return int(waiting or 0), max(0.0, age), int(dead or 0)

    async def list_alerts(
        self, limit: int, after: str = "", status: str = "", receiver: str = ""
    ) -> list[dict[str, Any]]:
        """Up to `limit` alerts by fingerprint (as Alertmanager's API sorts them), after the
        fingerprint `after`; only those of `status` and routed to `receiver`, if given."""
        where, args = _where(
            ("fingerprint > ?", after),
            ("status = ?", status),
            ("EXISTS (SELECT 1 FROM json_each(alerts.receivers) WHERE value = ?)", receiver),
        )
        sql = f"SELECT * FROM alerts{where} ORDER BY fingerprint LIMIT ?"
        rows = await self._run(self._query, sql, (*args, limit))
        return [_alert_json(_alert_from_row(r)) for r in rows]

    async def list_incidents(
        self,
        limit: int,
        before: tuple[str, str] | None = None,
        status: str = "",
        receiver: str = "",
    ) -> list[dict[str, Any]]:
        """Up to `limit` incidents, newest first (by opened_at, then id), after the one whose
        (opened_at, id) is `before`; only those of `status` and `receiver`, if given."""
        opened_at, incident_id = before or ("", "")
        where, args = _where(
            ("(opened_at < ?1 OR (opened_at = ?1 AND id < ?2))", opened_at, incident_id),
            ("status = ?", status),
            ("receiver = ?", receiver),
        )
        sql = f"SELECT * FROM incidents{where} ORDER BY opened_at DESC, id DESC LIMIT ?"
        incidents = await self._run(self._query, sql, (*args, limit))
        ids = [row[0] for row in incidents]
        outbox = await self._run(
            self._query,
            "SELECT incident_id, id, channel, channel_index, reason, state, attempts, last_error,"
            " created_at, sent_at FROM outbox WHERE incident_id IN"
            " (SELECT value FROM json_each(?)) ORDER BY id",
            (orjson.dumps(ids).decode(),),
        )
        by_incident: dict[str, list[dict[str, Any]]] = {}
        for o in outbox:
            by_incident.setdefault(o[0], []).append(
                {
                    "id": o[1],
                    "channel": o[2],
                    "channel_index": o[3],
                    "reason": o[4],
                    "state": o[5],
                    "attempts": o[6],
                    "last_error": o[7],
                    "created_at": o[8],
                    "sent_at": o[9],
                }
            )
        out = []
        for row in incidents:
            i = _incident_from_row(row)
            out.append(
                {
                    "id": i.id,
                    "receiver": i.receiver,
                    "alertmanager_receiver": i.am_receiver,
                    "group_key": i.group_key,
                    "status": i.status,
                    "opened_at": ts(i.opened_at),
                    "resolved_at": ts(i.resolved_at),
                    "acked_by": i.acked_by,
                    "acked_at": ts(i.acked_at),
                    "ack_via": i.ack_via or None,
                    "ack_comment": i.ack_comment or None,
                    "silence_id": i.silence_id or None,
                    "escalated_to": i.escalated_to or None,
                    "escalated_at": ts(i.escalated_at),
                    "alerts": sorted(i.alerts),
                    "group_labels": i.group_labels,
                    "notifications": by_incident.get(i.id, []),
                }
            )
        return out

    def _query(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return self._conn().execute(sql, args).fetchall()

    async def prune(self, older_than: timedelta, now: datetime) -> int:
        """Forget resolved alerts, closed incidents and finished deliveries past retention."""
        return await self._run(self._prune_sync, ts(now - older_than))

    def _prune_sync(self, cutoff: str) -> int:
        db = self._conn()
        finished = (
            "SELECT id FROM incidents WHERE status='resolved' AND resolved_at<? AND id NOT IN"
            " (SELECT incident_id FROM outbox WHERE state NOT IN ('sent','dead') OR created_at>=?)"
        )
        with transaction(db):
            n = db.execute(
                f"DELETE FROM outbox WHERE incident_id IN ({finished})", (cutoff, cutoff)
            ).rowcount
            db.execute(f"DELETE FROM messages WHERE incident_id IN ({finished})", (cutoff, cutoff))
            n += db.execute(
                f"DELETE FROM incidents WHERE id IN ({finished})", (cutoff, cutoff)
            ).rowcount
            n += db.execute(
                "DELETE FROM alerts WHERE status='resolved' AND last_seen<?", (cutoff,)
            ).rowcount
        return n


def _each(callback: Callable[[str, Plan], None], done: list[tuple[str, Plan]]) -> None:
    for correlation_id, plan in done:
        callback(correlation_id, plan)


def _where(*conditions: tuple[str, ...]) -> tuple[str, list[str]]:
    """(" WHERE a AND b", arguments) of the (clause, its arguments...) whose first argument is
    not empty; ("", []) if none is."""
    used = [c for c in conditions if c[1]]
    clauses = " AND ".join(c[0] for c in used)
    return (f" WHERE {clauses}" if used else ""), [a for c in used for a in c[1:]]


def _alert_from_row(r: tuple[Any, ...]) -> AlertState:
    return AlertState(
        fingerprint=r[0],
        labels=orjson.loads(r[1]),
        annotations=orjson.loads(r[2]),
        status=r[3],
        starts_at=datetime.fromisoformat(r[4]),
        ends_at=_dt(r[5]),
        generator_url=r[6],
        first_seen=datetime.fromisoformat(r[7]),
        last_seen=datetime.fromisoformat(r[8]),
        inhibited_by=r[9],
        receivers=orjson.loads(r[10]),
    )


def _alert_json(a: AlertState) -> dict[str, Any]:
    return {
        "fingerprint": a.fingerprint,
        "labels": a.labels,
        "annotations": a.annotations,
        "status": a.status,
        "startsAt": ts(a.starts_at),
        "endsAt": ts(a.ends_at),
        "generatorURL": a.generator_url,
        "inhibited_by": a.inhibited_by,
        "receivers": a.receivers,
        "first_seen": ts(a.first_seen),
        "last_seen": ts(a.last_seen),
    }


def _incident_from_row(r: tuple[Any, ...]) -> IncidentState:
    return IncidentState(
        id=r[0],
        receiver=r[1],
        am_receiver=r[2],
        group_key=r[3],
        status=r[4],
        opened_at=datetime.fromisoformat(r[5]),
        resolved_at=_dt(r[6]),
        alerts=set(orjson.loads(r[7])),
        notified=None if r[8] is None else set(orjson.loads(r[8])),
        last_notified_at=_dt(r[9]),
        group_labels=orjson.loads(r[10]),
        common_labels=orjson.loads(r[11]),
        common_annotations=orjson.loads(r[12]),
        external_url=r[13],
        truncated_alerts=r[14],
        acked_by=r[15],
        acked_at=_dt(r[16]),
        ack_via=r[17],
        ack_comment=r[18],
        silence_id=r[19],
        escalated_at=_dt(r[20]),
        escalated_to=r[21],
    )
