"""The SQLite engine of the store: one file, one writer thread, every call in arrival order."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson

from router.errors import StoreError
from router.models import IncidentView
from router.roles import replica_name
from router.state import Destination, IncidentState, Plan, State
from router.store import InboxRow, MessageKey, OutboxRow, unused_id
from router.store.files import FileIdentity, ProcessLock, connect, transaction, ts
from router.store.group_commit import GroupCommit, Pending
from router.store.rows import (
    NOTIFICATION_COLUMNS,
    ViewCache,
    WrittenView,
    alert_from_row,
    alert_json,
    incident_from_row,
    incidents_json,
    pack,
    unpack,
    write_plan,
)
from router.store.schema import migrate

T = TypeVar("T")

PROBE_INTERVAL = timedelta(seconds=1)  # after a failed commit, try a probe commit this often
PROBE_BYTES = 64 * 1024  # written (and deleted) by the probe that sees a full disk recover
INSERT_ROWS = 500  # inbox rows per INSERT statement (SQLite allows 32,766 bound values)


class SqliteStore:
    """The store (router.store.Store) in one SQLite file in WAL mode, written by one thread.

    `accept()` commits webhook payloads to the inbox table; payloads handed over while a commit
    runs share the next one (group commit). `commit_plans()` writes plans and moves the
    watermark (table `planner`) in one transaction, deleting the inbox rows it passed. A
    `<path>.lock` flock keeps a second router off the file.
    """

    def __init__(self, path: str | Path, *, synchronous: str = "normal") -> None:
        """A store for the file at `path` (made at open); raises StoreError for ":memory:"."""
        self.path = str(path)
        self.replica = replica_name()
        if self.path == ":memory:":
            raise StoreError("storage.path must be a file: alert-router keeps what it accepted")
        self.synchronous = synchronous.upper()
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._lock = ProcessLock(self.path)
        self._file: FileIdentity | None = None
        self._last_id = 0  # the last inbox id committed
        self._ids: set[str] = set()  # incident ids stored or handed out
        self._inbox = GroupCommit(self._insert)
        self._views = ViewCache()  # views just committed, for the claims (written on the thread)
        self._failing: str | None = None  # the last inbox commit's error, until one succeeds
        self._prober: asyncio.Task[None] | None = None

    @property
    def last_inbox_id(self) -> int:
        """The id of the last payload committed to the inbox (0 if none ever was)."""
        return self._last_id

    # ------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Lock, create or upgrade the file (see router/store/schema.py).

        Raises StoreError naming the file and what to do: locked by another router, not
        readable, of a newer version, or an earlier version's inbox file that is not readable.
        """
        await self._run(self._open_sync)
        self._prober = asyncio.create_task(self._probe_forever(), name="store probe")

    async def aclose(self) -> None:
        """Close once what was handed to accept() is committed (or refused).

        The WAL is copied into the database file and emptied first, so that the file alone
        holds everything once the router has stopped.
        """
        await self._inbox.wait_idle()
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
            db = connect(self.path, self.synchronous)
            db.execute("PRAGMA foreign_keys=ON")
            self._file = FileIdentity(self.path)
            migrate(db, self.path)
            # A row claimed by a delivery worker that died is due again.
            db.execute("UPDATE outbox SET state='queued' WHERE state='sending'")
            last = db.execute("SELECT seq FROM sqlite_sequence WHERE name='inbox'").fetchone()
            self._last_id = last[0] if last else 0
            self._ids = {row[0] for row in db.execute("SELECT id FROM incidents")}
            self._db = db
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

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("the store is not open")
        return self._db

    # ------------------------------------------------------------ state

    async def load_state(self) -> tuple[State, int]:
        """The firing alerts and open incidents, and the watermark, as committed."""
        return await self._run(self._load_state_sync)

    def _load_state_sync(self) -> tuple[State, int]:
        db = self._conn()
        state = State()
        for row in db.execute("SELECT * FROM alerts WHERE status='firing'"):
            state.alerts[row[0]] = alert_from_row(row)
        for row in db.execute("SELECT * FROM incidents WHERE status='firing'"):
            state.open(incident_from_row(row))
        (watermark,) = db.execute("SELECT watermark FROM planner").fetchone()
        return state, int(watermark)

    def new_incident_id(self) -> str:
        """A short id no stored incident has, nor any handed out since the store opened
        (memory only: called by the pipeline on the event loop)."""
        return unused_id(self._ids)

    async def commit_plans(self, plans: list[tuple[Plan, datetime]], watermark: int | None) -> None:
        """Write the plans (each with the time it was made) and, unless `watermark` is None,
        move the watermark there and delete the inbox rows up to it: one transaction.

        Raises StoreError if it did not commit (nothing of it is then written)."""
        await self._run(self._commit_plans_sync, plans, watermark)

    def _commit_plans_sync(self, plans: list[tuple[Plan, datetime]], watermark: int | None) -> None:
        written: list[WrittenView] = []
        with transaction(self._conn()) as db:
            for plan, now in plans:
                written += write_plan(db, plan, now)
            if watermark is not None:
                _move_watermark(db, watermark)
        self._views.add(written)

    async def set_aside(self, row: InboxRow, error: str) -> None:
        """Keep a payload that cannot be planned in `set_aside`, with why, and move the
        watermark past it (one transaction). Raises StoreError if it did not commit."""
        await self._run(self._set_aside_sync, row, error)

    def _set_aside_sync(self, row: InboxRow, error: str) -> None:
        with transaction(self._conn()) as db:
            db.execute(
                "INSERT INTO set_aside (body, correlation_id, received_at, error) VALUES (?,?,?,?)",
                (row.body, row.correlation_id, ts(row.received_at), error),
            )
            _move_watermark(db, row.id)

    async def watermark(self) -> int:
        """The id of the last payload planned, as committed."""
        return await self._run(
            lambda: int(self._conn().execute("SELECT watermark FROM planner").fetchone()[0])
        )

    def watch_inbox(self, grew: Callable[[], None]) -> None:
        """Nothing to watch: this process is the file's only writer (its accept() wakes the
        planner itself)."""

    async def take_lease(self, ttl: timedelta) -> int:
        """The planner lease of a file one router holds (its flock): always epoch 1."""
        return 1

    def drop_lease(self) -> None:
        """Nothing to drop: the one router is always the planner."""

    # ------------------------------------------------------------ the inbox

    async def accept(self, body: bytes, received_at: datetime, correlation_id: str) -> int:
        """Commit one validated payload to the inbox; its inbox id, once durable.

        Payloads handed over while a commit runs share the next one. Raises StoreError if the
        commit failed or the file is lost (nothing is then accepted).
        """
        return await self._inbox.submit(body, received_at, correlation_id)

    async def _insert(self, batch: list[Pending]) -> list[int]:
        """Insert the batch in one transaction (GroupCommit's Insert); the ids given."""
        try:
            last = await asyncio.get_running_loop().run_in_executor(
                self._thread, self._insert_sync, batch
            )
        except StoreError:
            raise
        except (sqlite3.Error, OSError) as exc:
            error = self._failure(exc)
            if not _locked(exc):
                self._failing = f"the last commit to the inbox failed: {error}"
            raise error from exc
        except Exception as exc:
            raise StoreError(f"{self.path}: {exc}") from exc
        return list(range(last - len(batch) + 1, last + 1))

    def _insert_sync(self, batch: list[Pending]) -> int:
        """Insert the batch in one transaction (on the store thread); the last id."""
        lost = self.files_lost()
        if lost:
            raise StoreError(lost[0])
        if len(batch) <= INSERT_ROWS:  # one statement, its own transaction: one GIL handoff
            last = _insert(self._conn(), batch)
        else:
            with transaction(self._conn()) as db:
                for start in range(0, len(batch), INSERT_ROWS):
                    last = _insert(db, batch[start : start + INSERT_ROWS])
        self._last_id = last  # only once committed
        self._failing = None
        return last

    async def _probe_forever(self) -> None:
        """After a failed inbox commit: commit (and delete) PROBE_BYTES every PROBE_INTERVAL;
        success clears the failure, so that /readyz says ready again."""
        while True:
            await asyncio.sleep(PROBE_INTERVAL.total_seconds())
            if self._failing is not None and not self._inbox.waiting:
                with contextlib.suppress(StoreError):
                    await self._run(self._probe_sync)
                    self._failing = None

    def _probe_sync(self) -> None:
        with transaction(self._conn()) as db:
            db.execute("CREATE TABLE IF NOT EXISTS probe (data BLOB)")
            db.execute("INSERT INTO probe VALUES (zeroblob(?))", (PROBE_BYTES,))
            db.execute("DELETE FROM probe")

    async def inbox_after(self, watermark: int, limit: int) -> list[InboxRow]:
        """Up to `limit` inbox rows past `watermark`, oldest first."""
        rows = await self._run(
            self._query,
            "SELECT id, body, correlation_id, received_at FROM inbox WHERE id>? ORDER BY id"
            " LIMIT ?",
            (watermark, limit),
        )
        return [InboxRow(r[0], unpack(r[1]), r[2], datetime.fromisoformat(r[3])) for r in rows]

    async def pending_alerts(self, correlation_id: str) -> int | None:
        """How many alerts a payload waiting in the inbox has; None if it is not waiting."""
        rows = await self._run(
            self._query, "SELECT body FROM inbox WHERE correlation_id=?", (correlation_id,)
        )
        if not rows:
            return None
        alerts = orjson.loads(unpack(rows[0][0])).get("alerts")
        return len(alerts) if isinstance(alerts, list) else 0

    # ------------------------------------------------------------ reads

    async def incident(self, incident_id: str) -> IncidentState | None:
        """The incident with this id as stored; None if unknown."""
        rows = await self._run(self._query, "SELECT * FROM incidents WHERE id=?", (incident_id,))
        return incident_from_row(rows[0]) if rows else None

    async def incident_for_message(self, channel: str, ref: str) -> str | None:
        """The id of the incident whose message on `channel` is `ref`; None if none is."""
        rows = await self._run(
            self._query,
            "SELECT incident_id FROM messages WHERE channel=? AND ref=?",
            (channel, ref),
        )
        return str(rows[0][0]) if rows else None

    # ------------------------------------------------------------ outbox

    async def claim_due(
        self,
        now: datetime,
        channels: list[str],
        limit: int = 100,
        destinations: list[Destination] | None = None,
    ) -> list[OutboxRow]:
        """Mark up to `limit` due rows of these channels (and of `destinations`, if given) as
        being sent; return them oldest first."""
        return await self._run(self._claim_due_sync, now, channels, limit, destinations)

    def _claim_due_sync(
        self, now: datetime, channels: list[str], limit: int, destinations: list[Destination] | None
    ) -> list[OutboxRow]:
        db = self._conn()
        marks = ",".join("?" * len(channels))
        only, keys = _only(destinations)
        rows = db.execute(
            "UPDATE outbox SET state='sending' WHERE id IN ("
            " SELECT id FROM outbox WHERE state='queued' AND next_attempt_at<=?"
            f" AND channel IN ({marks}){only} ORDER BY id LIMIT ?)"
            " RETURNING id, incident_id, receiver, channel, channel_index, view_id, correlation_id,"
            " created_at, attempts",
            (ts(now), *channels, *keys, limit),
        ).fetchall()
        views = self._views.claimed([r[5] for r in rows])  # those just committed, as built
        view_ids = sorted({r[5] for r in rows} - views.keys())
        for start in range(0, len(view_ids), 500):
            chunk = view_ids[start : start + 500]
            for view_id, view in db.execute(
                f"SELECT id, view FROM views WHERE id IN ({','.join('?' * len(chunk))})", chunk
            ):
                # packed from schema 10; a view written before is text
                views[view_id] = IncidentView.model_validate_json(
                    view if isinstance(view, str) else unpack(view)
                )
        refs: dict[MessageKey, str] = {}
        incident_ids = sorted({r[1] for r in rows})
        for start in range(0, len(incident_ids), 500):
            chunk = incident_ids[start : start + 500]
            for m in db.execute(
                "SELECT incident_id, receiver, channel, channel_index, ref FROM messages"
                f" WHERE incident_id IN ({','.join('?' * len(chunk))})",
                chunk,
            ):
                refs[(m[0], Destination(m[1], m[2], m[3]))] = m[4]
        return sorted(
            (
                OutboxRow(
                    r[0],
                    r[1],
                    Destination(r[2], r[3], r[4]),
                    views[r[5]],
                    r[6],
                    datetime.fromisoformat(r[7]),
                    r[8],
                    refs.get((r[1], Destination(r[2], r[3], r[4]))),
                )
                for r in rows
            ),
            key=lambda r: r.id,
        )

    async def mark_sent_many(self, sent: list[tuple[OutboxRow, str, datetime]]) -> None:
        """Record (row, message ref, when) acceptances by the channels, in one transaction."""
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
        if ref:  # an edit of the message sent before keeps its ref: nothing to write then
            db.execute(
                "INSERT INTO messages VALUES (?,?,?,?,?,?)"
                " ON CONFLICT (incident_id, receiver, channel, channel_index)"
                " DO UPDATE SET ref=excluded.ref, updated_at=excluded.updated_at"
                " WHERE ref<>excluded.ref",
                (row.incident_id, *row.destination, ref, ts(now)),
            )

    async def message_ref(self, row: OutboxRow) -> str | None:
        """The message sent for the row's incident and destination, if any."""
        rows = await self._run(
            self._query,
            "SELECT ref FROM messages WHERE incident_id=? AND receiver=? AND channel=? AND channel_index=?",
            (row.incident_id, *row.destination),
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
                (ts(until), *row.destination, row.id),
            )

    async def mark_dead(self, row: OutboxRow, error: str) -> None:
        """Give up on `row` (a dead letter), with why."""
        await self._run(
            self._exec,
            "UPDATE outbox SET state='dead', last_error=?, attempts=attempts+1 WHERE id=?",
            (error, row.id),
        )

    async def mark_dead_unless(
        self,
        channels: list[str],
        error: str,
        *,
        destinations: list[Destination] | None = None,
        created_before: datetime | None = None,
    ) -> dict[Destination, int]:
        """Give up on every queued row of a channel kind not in `channels` (with
        `destinations`: of a destination not in it), queued before `created_before` if given,
        with why; how many per destination."""
        return await self._run(
            self._mark_dead_unless_sync, channels, error, destinations, created_before
        )

    def _mark_dead_unless_sync(
        self,
        channels: list[str],
        error: str,
        destinations: list[Destination] | None,
        created_before: datetime | None,
    ) -> dict[Destination, int]:
        keys: list[object]
        if destinations is None:
            unless, keys = f" AND channel NOT IN ({','.join('?' * len(channels))})", [*channels]
        else:
            listed, keys = _listed(destinations)
            unless = f" AND NOT {listed}"
        before = " AND created_at<?" if created_before is not None else ""
        with transaction(self._conn()) as db:
            rows = db.execute(
                f"UPDATE outbox SET state='dead', last_error=? WHERE state='queued'{unless}{before}"
                " RETURNING receiver, channel, channel_index",
                (error, *keys, *([ts(created_before)] if created_before is not None else [])),
            ).fetchall()
        return dict(Counter(Destination(*r) for r in rows))

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
        return [alert_json(alert_from_row(r)) for r in rows]

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
            f"SELECT {NOTIFICATION_COLUMNS} FROM outbox WHERE incident_id IN"
            " (SELECT value FROM json_each(?)) ORDER BY id",
            (orjson.dumps(ids).decode(),),
        )
        return incidents_json(incidents, outbox)

    def _query(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return self._conn().execute(sql, args).fetchall()

    async def prune(self, older_than: timedelta, now: datetime) -> int:
        """Forget resolved alerts, closed incidents and finished deliveries past retention."""
        n, incidents = await self._run(self._prune_sync, ts(now - older_than))
        self._ids.difference_update(incidents)  # their ids may be handed out again
        return n

    def _prune_sync(self, cutoff: str) -> tuple[int, list[str]]:
        db = self._conn()
        finished = (
            "SELECT id FROM incidents WHERE status='resolved' AND resolved_at<? AND id NOT IN"
            " (SELECT incident_id FROM outbox WHERE state NOT IN ('sent','dead') OR created_at>=?)"
        )
        with transaction(db):
            views = db.execute(
                f"DELETE FROM outbox WHERE incident_id IN ({finished}) RETURNING view_id",
                (cutoff, cutoff),
            ).fetchall()
            n = len(views)
            db.executemany("DELETE FROM views WHERE id=?", views)
            db.execute(f"DELETE FROM messages WHERE incident_id IN ({finished})", (cutoff, cutoff))
            incidents = [
                row[0]
                for row in db.execute(
                    f"DELETE FROM incidents WHERE id IN ({finished}) RETURNING id", (cutoff, cutoff)
                ).fetchall()
            ]
            n += len(incidents)
            n += db.execute(
                "DELETE FROM alerts WHERE status='resolved' AND last_seen<?", (cutoff,)
            ).rowcount
        return n, incidents


def _move_watermark(db: sqlite3.Connection, watermark: int) -> None:
    """Set the watermark and delete the inbox rows it passed (in the caller's transaction,
    with the plans of those rows)."""
    db.execute("UPDATE planner SET watermark=?", (watermark,))
    db.execute("DELETE FROM inbox WHERE id<=?", (watermark,))


def _locked(exc: BaseException) -> bool:
    """Another connection holds the lock (SQLITE_BUSY)."""
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY


def _insert(db: sqlite3.Connection, rows: list[Pending]) -> int:
    """Insert `rows` into the inbox with one statement; the id of the last one."""
    values = ",".join(["(?,?,?)"] * len(rows))
    params = [v for body, cid, received_at in rows for v in (pack(body), cid, ts(received_at))]
    cursor = db.execute(
        f"INSERT INTO inbox (body, correlation_id, received_at) VALUES {values}", params
    )
    return int(cursor.lastrowid or 0)


def _where(*conditions: tuple[str, ...]) -> tuple[str, list[str]]:
    """(" WHERE a AND b", arguments) of the (clause, its arguments...) whose first argument is
    not empty; ("", []) if none is."""
    used = [c for c in conditions if c[1]]
    clauses = " AND ".join(c[0] for c in used)
    return (f" WHERE {clauses}" if used else ""), [a for c in used for a in c[1:]]


def _only(destinations: list[Destination] | None) -> tuple[str, list[object]]:
    """(" AND " + the condition of _listed, its arguments) for `destinations`, or ("", []) if
    None (no condition)."""
    if destinations is None:
        return "", []
    listed, keys = _listed(destinations)
    return f" AND {listed}", keys


def _listed(destinations: list[Destination]) -> tuple[str, list[object]]:
    """("((receiver, channel, channel_index) IN (...))", its arguments): a row of one of
    `destinations` (none if it is empty: "(0)")."""
    if not destinations:
        return "(0)", []
    values = ",".join("(?,?,?)" for _ in destinations)
    keys: list[object] = [part for d in destinations for part in d]
    return f"((receiver, channel, channel_index) IN (VALUES {values}))", keys
