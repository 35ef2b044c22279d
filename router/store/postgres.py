"""The PostgreSQL engine of the store (asyncpg): the SQLite engine's semantics on a database server.

Several replicas may share one database. Each accepts webhooks: an inbox insert holds
INBOX_LOCK for its transaction, so that inbox ids commit in id order across replicas (the
planner reads the rows past its watermark and would skip a lower id committed after a higher
one), and NOTIFY `inbox` wakes the planner. One replica at a time plans: the holder of the
planner lease (table `planner_lease`, router/roles.py); every transaction that writes the
planner's state is fenced on the lease's epoch and expiry (`_fenced`).

Delivery runs on every replica: a claimed outbox row names its replica (`claimed_by`)
and a lease (`lease_until`, the database's clock), and one destination is worked by one
replica at a time, the one holding its row in `destination_leases`. Claims are taken with
FOR UPDATE SKIP LOCKED, renewed every CLAIM_LEASE / 3 while the rows are in hand, and taken
over by another replica once the lease of a replica that died has run out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson

from router.errors import LeaseLost, StoreError, StoreRefused
from router.models import IncidentView
from router.roles import replica_name
from router.state import Destination, IncidentState, Plan, State
from router.store import InboxRow, OutboxRow, QueuedCommand, unused_id
from router.store.files import ts
from router.store.group_commit import GroupCommit, Pending
from router.store.postgres_schema import COMMANDS_CHANNEL, INBOX_LOCK, migrate
from router.store.rows import (
    ALERT_COLUMNS,
    INCIDENT_COLUMNS,
    NOTIFICATION_COLUMNS,
    OUTBOX_INSERT,
    ViewCache,
    WrittenView,
    alert_from_row,
    alert_json,
    alert_values,
    incident_from_row,
    incident_values,
    incidents_json,
    outbox_values,
    upsert,
)

PROBE_INTERVAL = timedelta(seconds=1)  # after a failed inbox commit, try a commit this often
CONNECT_TIMEOUT = timedelta(seconds=10)
POOL_SIZE = 4  # connections: the inbox's commits, the planner, delivery, the API's reads
# How long a replica's claim on outbox rows and on their destinations lasts unless renewed
# (renewed every third of it while the rows are in hand): a replica that dies has its rows
# delivered by another this long after its last renewal.
CLAIM_LEASE = timedelta(seconds=15)
# A replica cut off from the database mid-transaction holds its locks (the lease row's, the
# inbox's) until the server ends its session: after this long idle in a transaction. Every
# query of the pool gives up after CONNECT_TIMEOUT.
IDLE_IN_TRANSACTION = timedelta(seconds=3)
LEASE_QUERY_TIMEOUT = timedelta(seconds=1)  # a lease query the database does not answer fails
INBOX_CHANNEL = "inbox"  # NOTIFY'd by each inbox insert with the last id committed
# Errors of the database or of the connection to it: each becomes a StoreError. asyncpg raises
# InternalClientError when the server ends a connection while a query waits on it.
FAILURES = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    asyncio.TimeoutError,
)
# Errors of the data written (SQLSTATE classes 22 and 54: a NUL in text, a value too long for
# an index): the same plan fails again, so each becomes a StoreRefused.
REFUSALS = (asyncpg.DataError, asyncpg.ProgramLimitExceededError)


def _upsert(table: str, columns: list[str]) -> str:
    """INSERT of a whole row that replaces the row of the same primary key (the first column)."""
    return upsert(table, columns, [f"${n}" for n in range(1, len(columns) + 1)])


UPSERT_ALERT = _upsert("alerts", ALERT_COLUMNS)
UPSERT_INCIDENT = _upsert("incidents", INCIDENT_COLUMNS)
# An outbox row no other replica holds (a queued row is no one's), with this replica's name as
# argument ${}: what defer and mark_dead may change.
NOT_ANOTHERS = "(claimed_by IS NULL OR claimed_by=${})"


def _keys(destinations: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """The three arrays (receivers, channel kinds, indexes) that _destinations() reads, of
    destinations given as (receiver, channel, channel_index): Destinations, or rows."""
    return [[d[n] for d in destinations] for n in range(3)]


def _destinations(first: int) -> str:
    """A SELECT of (receiver, channel, channel_index) keys given as three arrays, the
    statement's arguments `first` to `first` + 2."""
    return f"SELECT * FROM unnest(${first}::text[], ${first + 1}::text[], ${first + 2}::int[])"


class PostgresStore:
    """The store (router.store.Store) in a PostgreSQL database, through a small asyncpg pool.

    `accept()` commits webhook payloads to the inbox table; payloads handed over while a commit
    runs share the next one (group commit), so the inbox's ids are committed in order.
    `commit_plans()` writes plans and moves the watermark in one transaction. `path` is the URL
    without its password (what logs and errors show).
    """

    def __init__(
        self, url: str, password: str | None = None, *, lease: timedelta = CLAIM_LEASE
    ) -> None:
        """A store for the database at `url` (postgresql://user@host:port/database, without a
        password), with `password` if the server asks for one; its delivery claims last
        `lease` unless renewed. Nothing is connected yet.

        `replica` names this process in the database (router.roles.replica_name): the planner
        lease's holder, the claims' owner."""
        self.path = url
        self.replica = replica_name()
        self._password = password
        self.lease = lease
        self._renewer: asyncio.Task[None] | None = None
        self._pool: asyncpg.Pool | None = None
        # The lease's connection; it also LISTENs on INBOX_CHANNEL and COMMANDS_CHANNEL.
        self._leases: asyncpg.Connection | None = None
        self._epoch = 0  # the planner lease's epoch this replica holds; 0: none
        self._inbox_grew: Callable[[], None] = lambda: None
        self._last_id = 0
        self._ids: set[str] = set()
        self._inbox = GroupCommit(self._commit_pending)
        self._views = ViewCache()  # views this replica just committed, for its claims
        self._failing: str | None = None
        self._prober: asyncio.Task[None] | None = None
        self._queued = asyncio.Event()  # a NOTIFY came on COMMANDS_CHANNEL

    def __repr__(self) -> str:
        """The class and the URL, never the password."""
        return f"PostgresStore({self.path!r})"

    @property
    def last_inbox_id(self) -> int:
        """The id of the last payload committed to the inbox (0 if none ever was)."""
        return self._last_id

    # ------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Connect, create or upgrade the schema (postgres_schema.migrate). Other replicas may
        use the database too; the planner lease is taken by take_lease().

        Raises StoreError naming the database (never the password): not reachable, refused
        the credentials, or of a newer schema version.
        """
        try:
            self._leases = await self._listening()
            await migrate(self._leases, self.path)
            self._pool = await asyncpg.create_pool(
                self.path,
                password=self._password,
                min_size=1,
                max_size=POOL_SIZE,
                timeout=CONNECT_TIMEOUT.total_seconds(),
                command_timeout=CONNECT_TIMEOUT.total_seconds(),
                server_settings={
                    "idle_in_transaction_session_timeout": str(
                        int(IDLE_IN_TRANSACTION.total_seconds() * 1000)
                    )
                },
            )
            async with self._conn() as db:
                # Rows claimed by a replica that died are not reset here: another replica may
                # be working them; claim_due() takes them over once their lease ran out.
                self._last_id = await db.fetchval(
                    "SELECT greatest((SELECT max(id) FROM inbox), (SELECT watermark FROM planner))"
                )
                self._ids = {r[0] for r in await db.fetch("SELECT id FROM incidents")}
        except (*FAILURES, ValueError, OverflowError) as exc:  # or asyncpg refused the URL
            await self._close_connections()
            raise self._failure(exc) from exc
        except BaseException:
            await self._close_connections()
            raise
        self._prober = asyncio.create_task(self._probe_forever(), name="store probe")
        self._renewer = asyncio.create_task(self._renew_forever(), name="claim renewal")

    async def _connect(self) -> asyncpg.Connection:
        """One connection to the database (bounded by CONNECT_TIMEOUT)."""
        return await asyncpg.connect(
            self.path, password=self._password, timeout=CONNECT_TIMEOUT.total_seconds()
        )

    async def _listening(self) -> asyncpg.Connection:
        """A connection of its own that LISTENs to the inbox's and the commands' NOTIFY: the
        lease is taken and renewed on it."""
        conn = await self._connect()
        try:
            await conn.add_listener(INBOX_CHANNEL, self._notified)
            await conn.add_listener(COMMANDS_CHANNEL, self._command_queued)
        except BaseException:
            conn.terminate()
            raise
        self._queued.set()  # a command may have been queued while nobody listened: look once
        return conn

    def _notified(self, conn: object, pid: int, channel: str, payload: str) -> None:
        """NOTIFY inbox: another replica (or this one) committed inbox rows up to `payload`."""
        self._last_id = max(self._last_id, int(payload))
        self._inbox_grew()

    def watch_inbox(self, grew: Callable[[], None]) -> None:
        """Call `grew()` whenever any replica commits payloads to the inbox (and when that
        may have been missed: after the connection that listens is made again)."""
        self._inbox_grew = grew

    async def aclose(self) -> None:
        """Close once what was handed to accept() is committed (or refused); give up the
        planner lease if held, so that another replica takes it at its next try."""
        await self._inbox.wait_idle()
        for task in (self._prober, self._renewer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with contextlib.suppress(StoreError):
            await self._release_claims()
        if self._epoch and self._leases is not None and not self._leases.is_closed():
            with contextlib.suppress(*FAILURES):
                await self._leases.execute(
                    "UPDATE planner_lease SET lease_until='-infinity' WHERE holder=$1 AND epoch=$2",
                    self.replica,
                    self._epoch,
                    timeout=LEASE_QUERY_TIMEOUT.total_seconds(),
                )
        self._epoch = 0
        await self._close_connections()

    async def _close_connections(self) -> None:
        """Close the pool and the lease's (and LISTEN's) connection."""
        pool, leases, self._pool, self._leases = self._pool, self._leases, None, None
        with contextlib.suppress(*FAILURES):
            if pool is not None:
                await asyncio.wait_for(pool.close(), CONNECT_TIMEOUT.total_seconds())
        with contextlib.suppress(*FAILURES):
            if leases is not None:
                await leases.close(timeout=CONNECT_TIMEOUT.total_seconds())

    def files_lost(self) -> list[str]:
        """Always empty: a database has no file to lose; a lost connection is made again."""
        return []

    def problem(self) -> str | None:
        """Why a payload cannot be accepted now (one line), or None if it can: the last
        commit to the inbox failed and no commit or probe since succeeded."""
        return self._failing

    # ------------------------------------------------------------ the planner lease

    async def take_lease(self, ttl: timedelta) -> int:
        """Take the planner lease if it is free or expired (its epoch grows by one), or renew
        it if this replica holds it, until `ttl` from now by the database's clock; the epoch
        held, or 0 if another replica holds it. Raises StoreError if the database did not
        answer (within LEASE_QUERY_TIMEOUT); the connection is then made again next time."""
        try:
            if self._leases is None or self._leases.is_closed():
                self._leases = await self._listening()
                self._inbox_grew()  # a NOTIFY may have come while no one listened
            epoch = await self._leases.fetchval(
                "UPDATE planner_lease SET"
                " epoch=CASE WHEN holder=$1 AND epoch=$2 THEN epoch ELSE epoch+1 END,"
                " holder=$1, lease_until=clock_timestamp()+$3::interval"
                " WHERE (holder=$1 AND epoch=$2) OR lease_until<clock_timestamp()"
                " RETURNING epoch",
                self.replica,
                self._epoch,
                ttl,
                timeout=LEASE_QUERY_TIMEOUT.total_seconds(),
            )
        except FAILURES as exc:
            leases, self._leases = self._leases, None
            if leases is not None:
                leases.terminate()
            raise self._failure(exc) from exc
        self._epoch = int(epoch or 0)
        return self._epoch

    def drop_lease(self) -> None:
        """Forget the epoch held: plans are fenced off from now, and the next take_lease()
        takes the lease only once it is free or expired, with a new epoch."""
        self._epoch = 0

    async def _fence(self, db: asyncpg.Connection) -> int:
        """Make the caller's transaction one of the planner's: it commits only if this replica
        still holds the lease of its epoch, unexpired (FOR SHARE: a takeover waits for it, and
        this waits for a takeover in progress and then sees its epoch). The epoch held.

        Raises LeaseLost (and drops the epoch) if not."""
        epoch = self._epoch
        held = epoch and await db.fetchval(
            "SELECT true FROM planner_lease WHERE epoch=$1 AND holder=$2"
            " AND lease_until>clock_timestamp() FOR SHARE",
            epoch,
            self.replica,
        )
        if not held:
            self._epoch = 0
            raise LeaseLost(
                f"{self.path}: this replica ({self.replica}) no longer holds the planner lease"
                + (f" of epoch {epoch}" if epoch else "")
            )
        return epoch

    @contextlib.asynccontextmanager
    async def _fenced(self) -> AsyncIterator[tuple[asyncpg.Connection, int]]:
        """A write transaction of the planner (see _fence): (connection, epoch)."""
        async with self._write() as db:
            yield db, await self._fence(db)

    @contextlib.asynccontextmanager
    async def _planning(
        self,
    ) -> AsyncIterator[tuple[asyncpg.Connection, int, list[WrittenView]]]:
        """A planner's transaction that writes plans (see _fenced): (connection, epoch, the
        list to extend with the views written). Once it commits, those views are kept for
        the claims. Raises StoreRefused if the database refuses what a plan holds."""
        written: list[WrittenView] = []
        try:
            async with self._fenced() as (db, epoch):
                yield db, epoch, written
        except StoreError as exc:
            if isinstance(exc.__cause__, REFUSALS):
                raise StoreRefused(str(exc)) from exc.__cause__
            raise
        self._views.add(written)

    def _failure(self, exc: BaseException) -> StoreError:
        """A database or connection error as a StoreError naming the database."""
        if isinstance(exc, StoreError):
            return exc
        if isinstance(exc, asyncio.TimeoutError):
            return StoreError(f"{self.path}: no answer within {CONNECT_TIMEOUT}")
        return StoreError(f"{self.path}: {exc}")

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; database errors become StoreError."""
        if self._pool is None:
            raise StoreError("the store is not open")
        try:
            async with self._pool.acquire() as db:
                yield db
        except FAILURES as exc:
            raise self._failure(exc) from exc

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[asyncpg.Connection]:
        """A transaction on a pooled connection."""
        async with self._conn() as db, db.transaction():
            yield db

    # ------------------------------------------------------------ state

    async def load_state(self) -> tuple[State, int]:
        """The firing alerts and open incidents, and the watermark, as committed (by whichever
        replica planned last); the incident ids taken are read again too."""
        state = State()
        async with self._conn() as db, db.transaction(isolation="repeatable_read"):
            for row in await db.fetch("SELECT * FROM alerts WHERE status='firing'"):
                state.alerts[row[0]] = alert_from_row(tuple(row))
            for row in await db.fetch("SELECT * FROM incidents WHERE status='firing'"):
                state.open(incident_from_row(tuple(row)))
            watermark = await db.fetchval("SELECT watermark FROM planner")
            self._ids |= {r[0] for r in await db.fetch("SELECT id FROM incidents")}
        return state, int(watermark)

    async def watermark(self) -> int:
        """The id of the last payload planned, as committed (by whichever replica plans)."""
        async with self._conn() as db:
            return int(await db.fetchval("SELECT watermark FROM planner"))

    def new_incident_id(self) -> str:
        """A short id no stored incident has, nor any handed out since the store opened."""
        return unused_id(self._ids)

    async def commit_plans(self, plans: list[tuple[Plan, datetime]], watermark: int | None) -> None:
        """Write the plans (each with the time it was made) and, unless `watermark` is None,
        move the watermark there and delete the inbox rows up to it: one transaction.

        Raises StoreError if it did not commit (nothing of it is then written), StoreRefused
        if the database refuses what a plan holds, LeaseLost if this replica no longer holds
        the planner lease it planned with."""
        async with self._planning() as (db, epoch, written):
            for plan, now in plans:
                written += await _write_plan(db, plan, now, epoch)
            if watermark is not None:
                await _move_watermark(db, watermark, epoch)

    # ------------------------------------------------------------ chat commands (CommandQueue)

    async def submit_command(
        self,
        name: str,
        incident_id: str,
        actor: dict[str, str],
        duration: timedelta | None,
        comment: str,
        now: datetime,
    ) -> int:
        """Commit an /ack or /unack for the planner to apply, and wake it (NOTIFY on
        COMMANDS_CHANNEL, delivered at the commit); its id. Raises StoreError."""
        async with self._write() as db:
            command_id = await db.fetchval(
                "INSERT INTO commands (name, incident_id, actor, duration_s, comment, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                name,
                incident_id,
                orjson.dumps(actor).decode(),
                None if duration is None else duration.total_seconds(),
                comment,
                ts(now),
            )
            await db.execute("SELECT pg_notify($1, $2)", COMMANDS_CHANNEL, str(command_id))
        return int(command_id)

    async def wait_commands(self, at_most: timedelta) -> None:
        """Return once a NOTIFY on COMMANDS_CHANNEL came since the last return, or after
        `at_most`. The lease's connection LISTENs (open() makes it, take_lease() again when
        lost; each time this returns once at once: a command may have been queued while
        nobody listened); while it is down, this waits `at_most` (the caller looks anyway)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queued.wait(), at_most.total_seconds())
        self._queued.clear()

    def _command_queued(self, *_: object) -> None:
        """asyncpg's listener callback (connection, pid, channel, payload): wake the planner."""
        self._queued.set()

    async def note_silence(self, command_id: int, silence_id: str) -> None:
        """Remember the silence made for a command before its ack commits. Raises StoreError."""
        async with self._write() as db:
            await db.execute(
                "UPDATE commands SET silence_id=$2 WHERE id=$1", command_id, silence_id
            )

    async def pending_commands(self, limit: int) -> list[QueuedCommand]:
        """Up to `limit` commands without an answer, oldest first. Raises StoreError."""
        async with self._conn() as db:
            rows = await db.fetch(
                "SELECT id, name, incident_id, actor, duration_s, comment, created_at, silence_id"
                " FROM commands WHERE result IS NULL ORDER BY id LIMIT $1",
                limit,
            )
        return [
            QueuedCommand(
                int(r[0]),
                r[1],
                r[2],
                orjson.loads(r[3]),
                None if r[4] is None else timedelta(seconds=r[4]),
                r[5],
                datetime.fromisoformat(r[6]),
                r[7],
            )
            for r in rows
        ]

    async def command_result(self, command_id: int) -> str | None:
        """The planner's answer to the command; None while it waits. Raises StoreError."""
        async with self._conn() as db:
            result: str | None = await db.fetchval(
                "SELECT result FROM commands WHERE id=$1", command_id
            )
        return result

    async def first_update(self, update_id: int, keep: timedelta) -> bool:
        """Record a Telegram webhook update's id; False if a replica recorded it already (sent
        again). Ids recorded longer than `keep` ago (the database's clock) are forgotten.
        Raises StoreError."""
        async with self._write() as db:
            await db.execute("DELETE FROM telegram_updates WHERE seen_at<now()-$1::interval", keep)
            first = await db.fetchval(
                "INSERT INTO telegram_updates VALUES ($1) ON CONFLICT DO NOTHING RETURNING true",
                update_id,
            )
        return bool(first)

    async def finish_command(
        self, command_id: int, result: str, now: datetime, plan: Plan | None = None
    ) -> bool:
        """The command's answer and the plan it made, in one transaction; False (nothing
        written) if it has an answer already. The planner's work: fenced on its lease (see
        _fence). Raises StoreError, StoreRefused, LeaseLost."""
        async with self._planning() as (db, epoch, written):
            done = await db.execute(
                "UPDATE commands SET result=$2, applied_at=$3 WHERE id=$1 AND result IS NULL",
                command_id,
                result,
                ts(now),
            )
            if _count(done) == 0:
                return False
            if plan is not None:
                written += await _write_plan(db, plan, now, epoch)
        return True

    async def set_aside(self, row: InboxRow, error: str) -> None:
        """Keep a payload that cannot be planned in `set_aside`, with why, and move the
        watermark past it (one transaction). Raises StoreError if it did not commit,
        LeaseLost if this replica no longer holds the planner lease."""
        async with self._fenced() as (db, epoch):
            await db.execute(
                "INSERT INTO set_aside (body, correlation_id, received_at, error)"
                " VALUES ($1, $2, $3, $4)",
                row.body,
                row.correlation_id,
                ts(row.received_at),
                error,
            )
            await _move_watermark(db, row.id, epoch)

    # ------------------------------------------------------------ the inbox

    async def accept(self, body: bytes, received_at: datetime, correlation_id: str) -> int:
        """Commit one validated payload to the inbox; its inbox id, once committed.

        Payloads handed over while a commit runs share the next one. Raises StoreError if the
        commit failed (nothing is then accepted).
        """
        return await self._inbox.submit(body, received_at, correlation_id)

    async def _commit_pending(self, batch: list[Pending]) -> list[int]:
        """Insert one batch (GroupCommit's Insert); a failure is remembered for /readyz."""
        try:
            return await self._insert(batch)
        except Exception as exc:  # whatever failed, each webhook gets its 503
            error = self._failure(exc)
            self._failing = f"the last commit to the inbox failed: {error}"
            raise error from exc

    async def _insert(self, batch: list[Pending]) -> list[int]:
        """Insert the batch in one transaction, in order, holding INBOX_LOCK (so that no id
        commits after a higher one, whichever replica inserts it), and NOTIFY the planner;
        the ids given."""
        async with self._write() as db:
            await db.execute("SELECT pg_advisory_xact_lock($1)", INBOX_LOCK)
            rows = await db.fetch(
                "INSERT INTO inbox (body, correlation_id, received_at)"
                " SELECT * FROM unnest($1::bytea[], $2::text[], $3::text[]) RETURNING id",
                [body for body, *_ in batch],
                [cid for _, cid, *_ in batch],
                [ts(received_at) for _, _, received_at in batch],
            )
            last = max(int(r[0]) for r in rows)
            await db.execute("SELECT pg_notify($1, $2)", INBOX_CHANNEL, str(last))
        ids = sorted(int(r[0]) for r in rows)
        self._last_id = max(self._last_id, ids[-1])  # only once committed (NOTIFY may be first)
        self._failing = None
        return ids

    async def _probe_forever(self) -> None:
        """After a failed inbox commit: try a write transaction every PROBE_INTERVAL; success
        clears the failure, so that /readyz says ready again."""
        while True:
            await asyncio.sleep(PROBE_INTERVAL.total_seconds())
            if self._failing is not None and not self._inbox.waiting:
                with contextlib.suppress(StoreError):
                    await self.check_writable()
                    self._failing = None

    async def inbox_after(self, watermark: int, limit: int) -> list[InboxRow]:
        """Up to `limit` inbox rows past `watermark`, oldest first."""
        async with self._conn() as db:
            rows = await db.fetch(
                "SELECT id, body, correlation_id, received_at FROM inbox WHERE id>$1 ORDER BY id"
                " LIMIT $2",
                watermark,
                limit,
            )
        return [InboxRow(r[0], r[1], r[2], datetime.fromisoformat(r[3])) for r in rows]

    async def pending_alerts(self, correlation_id: str) -> int | None:
        """How many alerts a payload waiting in the inbox has; None if it is not waiting."""
        async with self._conn() as db:
            body = await db.fetchval(
                "SELECT body FROM inbox WHERE correlation_id=$1 LIMIT 1", correlation_id
            )
        if body is None:
            return None
        alerts = orjson.loads(body).get("alerts")
        return len(alerts) if isinstance(alerts, list) else 0

    # ------------------------------------------------------------ reads

    async def incident(self, incident_id: str) -> IncidentState | None:
        """The incident with this id as stored; None if unknown."""
        async with self._conn() as db:
            row = await db.fetchrow("SELECT * FROM incidents WHERE id=$1", incident_id)
        return incident_from_row(tuple(row)) if row is not None else None

    async def incident_for_message(self, channel: str, ref: str) -> str | None:
        """The id of the incident whose message on `channel` is `ref`; None if none is."""
        async with self._conn() as db:
            found = await db.fetchval(
                "SELECT incident_id FROM messages WHERE channel=$1 AND ref=$2", channel, ref
            )
        return str(found) if found is not None else None

    # ------------------------------------------------------------ outbox

    async def claim_due(
        self,
        now: datetime,
        channels: list[str],
        limit: int = 100,
        destinations: list[Destination] | None = None,
    ) -> list[OutboxRow]:
        """Claim up to `limit` due rows of these channels (and of `destinations`, if given: a
        replica leaves the rows of a destination its config lacks to one whose config has it)
        for this replica; return them oldest first, each with its view and the message already
        sent for its destination.

        One transaction: the destinations of the oldest `limit` due rows (and of rows whose
        claim ran out) that no other replica's running lease holds are leased to this replica
        (rows of destination_leases locked FOR UPDATE SKIP LOCKED: a replica claiming at the
        same moment is skipped, not waited for); rows another replica claimed on a destination
        leased here now are taken over (`taken_over`); then the due rows of the leased
        destinations are claimed, oldest first, FOR UPDATE SKIP LOCKED, until `lease` from
        now. Leases taken here for destinations that got no row are let go at once.
        """
        only = (
            f" AND (receiver, channel, channel_index) IN ({_destinations(5)})"
            if destinations is not None
            else ""
        )
        async with self._write() as db:
            # Walked in id order on the partial index outbox_queued, stopping at the limit;
            # NOT IN, not NOT EXISTS: an anti join reads every row before the limit applies.
            free = (
                f" AND channel=ANY($2::text[]){only} AND (receiver, channel, channel_index)"
                " NOT IN (SELECT receiver, channel, channel_index FROM destination_leases"
                " WHERE claimed_by<>$3 AND lease_until>=now()) ORDER BY id LIMIT $4"
            )
            wanted = await db.fetch(
                "SELECT receiver, channel, channel_index FROM ("
                " (SELECT id, receiver, channel, channel_index FROM outbox"
                f" WHERE state='queued' AND next_attempt_at<=$1{free})"
                " UNION ALL (SELECT id, receiver, channel, channel_index FROM outbox"
                f" WHERE state='sending' AND claimed_by IS DISTINCT FROM $3{free})) due"
                " GROUP BY receiver, channel, channel_index ORDER BY min(id) LIMIT $4",
                ts(now),
                channels,
                self.replica,
                limit,
                *(_keys(destinations) if destinations is not None else []),
            )
            if not wanted:
                return []
            held = await self._lease_destinations(db, wanted)
            if not held:
                return []
            keys = _keys([d for d, _ in held])
            taken = await db.fetch(
                "UPDATE outbox SET state='queued', claimed_by=NULL, lease_until=NULL"
                " WHERE state='sending' AND claimed_by IS DISTINCT FROM $1"
                f" AND (receiver, channel, channel_index) IN ({_destinations(2)})"
                " RETURNING id",
                self.replica,
                *keys,
            )
            rows = await db.fetch(
                "UPDATE outbox SET state='sending', claimed_by=$1, lease_until=now()+$2"
                " WHERE id IN (SELECT id FROM outbox WHERE state='queued' AND next_attempt_at<=$3"
                f" AND (receiver, channel, channel_index) IN ({_destinations(4)})"
                " ORDER BY id LIMIT $7 FOR UPDATE SKIP LOCKED)"
                " RETURNING id, incident_id, receiver, channel, channel_index, correlation_id,"
                " created_at, attempts, (SELECT view FROM views WHERE views.id=view_id),"
                " (SELECT ref FROM messages m WHERE m.incident_id=outbox.incident_id"
                " AND m.receiver=outbox.receiver AND m.channel=outbox.channel"
                " AND m.channel_index=outbox.channel_index), view_id",
                self.replica,
                self.lease,
                ts(now),
                *keys,
                limit,
            )
            worked = {(r[2], r[3], r[4]) for r in rows}
            idle = [dest for dest, before in held if before != self.replica and dest not in worked]
            if idle:  # taken in this transaction for nothing: free for another replica
                await db.execute(
                    "UPDATE destination_leases SET lease_until='-infinity'"
                    f" WHERE (receiver, channel, channel_index) IN ({_destinations(1)})",
                    *_keys(idle),
                )
        taken_over = {int(r[0]) for r in taken}
        views = self._views.claimed([r[10] for r in rows])  # those just committed, as built
        return sorted(
            (
                OutboxRow(
                    id=r[0],
                    incident_id=r[1],
                    destination=Destination(r[2], r[3], r[4]),
                    view=views.get(r[10]) or IncidentView.model_validate_json(r[8]),
                    correlation_id=r[5],
                    created_at=datetime.fromisoformat(r[6]),
                    attempts=r[7],
                    ref=r[9],
                    taken_over=r[0] in taken_over,
                )
                for r in rows
            ),
            key=lambda r: r.id,
        )

    async def _lease_destinations(
        self, db: asyncpg.Connection, wanted: list[asyncpg.Record]
    ) -> list[tuple[tuple[str, str, int], str]]:
        """Lease the `wanted` destinations (receiver, channel, channel_index) to this replica
        where no other replica's lease runs (in the caller's transaction); each leased one with
        the replica that held it before ('' if none did)."""
        keys = _keys(wanted)
        # A row for each destination first, in one order (two replicas inserting the same new
        # rows wait for each other in that order, never for each other crosswise).
        await db.execute(
            "INSERT INTO destination_leases"
            f" SELECT r, c, i, '', '-infinity' FROM ({_destinations(1)}) AS k(r, c, i)"
            " ORDER BY md5(r), c, i"
            " ON CONFLICT (md5(receiver), channel, channel_index) DO NOTHING",
            *keys,
        )
        leased = await db.fetch(
            "UPDATE destination_leases d SET claimed_by=$4, lease_until=now()+$5"
            " FROM (SELECT receiver, channel, channel_index, claimed_by FROM destination_leases"
            f" WHERE (receiver, channel, channel_index) IN ({_destinations(1)})"
            " AND (claimed_by=$4 OR lease_until<now()) FOR UPDATE SKIP LOCKED) free"
            " WHERE d.receiver=free.receiver AND d.channel=free.channel"
            " AND d.channel_index=free.channel_index"
            " RETURNING d.receiver, d.channel, d.channel_index, free.claimed_by",
            *keys,
            self.replica,
            self.lease,
        )
        return [((r[0], r[1], r[2]), r[3]) for r in leased]

    async def _renew_forever(self) -> None:
        """Renew this replica's claims (rows in hand and their destinations) every third of
        the lease, so that no other replica takes them over while they are being worked."""
        while True:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            with contextlib.suppress(StoreError):
                await self._renew_claims()

    async def _renew_claims(self) -> int:
        """Extend to `lease` from now the claims of this replica on rows it is sending and on
        their destinations; how many rows. Raises StoreError if it did not commit."""
        async with self._write() as db:
            renewed = await db.execute(
                "UPDATE outbox SET lease_until=now()+$2 WHERE claimed_by=$1 AND state='sending'",
                self.replica,
                self.lease,
            )
            await db.execute(
                "UPDATE destination_leases d SET lease_until=greatest(lease_until, now()+$2)"
                " WHERE claimed_by=$1 AND EXISTS (SELECT 1 FROM outbox o WHERE o.claimed_by=$1"
                " AND o.state='sending' AND o.receiver=d.receiver AND o.channel=d.channel"
                " AND o.channel_index=d.channel_index)",
                self.replica,
                self.lease,
            )
        return _count(renewed)

    async def _release_claims(self) -> None:
        """On a clean close: this replica's rows still claimed are queued again and its
        destinations let go, so that another replica takes them without waiting for a lease."""
        async with self._write() as db:
            await db.execute(
                "UPDATE outbox SET state='queued', claimed_by=NULL, lease_until=NULL"
                " WHERE claimed_by=$1 AND state='sending'",
                self.replica,
            )
            await db.execute("DELETE FROM destination_leases WHERE claimed_by=$1", self.replica)

    async def mark_sent_many(self, sent: list[tuple[OutboxRow, str, datetime]]) -> None:
        """Record (row, message ref, when) acceptances by the channels, in one transaction."""
        async with self._write() as db:
            await db.executemany(
                "UPDATE outbox SET state='sent', sent_at=$1, message_ref=$2, last_error=NULL,"
                " attempts=attempts+1, lease_until=NULL WHERE id=$3",
                [(ts(now), ref, row.id) for row, ref, now in sent],
            )
            await db.executemany(
                "INSERT INTO messages VALUES ($1, $2, $3, $4, $5, $6)"
                " ON CONFLICT (incident_id, receiver, channel, channel_index)"
                " DO UPDATE SET ref=EXCLUDED.ref, updated_at=EXCLUDED.updated_at",
                [
                    (row.incident_id, *row.destination, ref, ts(now))
                    for row, ref, now in sent
                    if ref
                ],
            )

    async def message_ref(self, row: OutboxRow) -> str | None:
        """The message sent for the row's incident and destination, if any."""
        async with self._conn() as db:
            ref = await db.fetchval(
                "SELECT ref FROM messages WHERE incident_id=$1 AND receiver=$2 AND channel=$3"
                " AND channel_index=$4",
                row.incident_id,
                *row.destination,
            )
        return str(ref) if ref is not None else None

    async def defer(
        self, row: OutboxRow, error: str, until: datetime, *, attempted: bool = True
    ) -> None:
        """Retry `row` at `until`, and hold every later row of its destination until then too,
        so that a destination's notifications keep their order. Only this replica's claims
        are queued again: a row another replica took over (this one's lease ran out) is its."""
        async with self._write() as db:
            await db.execute(
                "UPDATE outbox SET state='queued', last_error=$1, next_attempt_at=$2,"
                " attempts=attempts+$3, claimed_by=NULL, lease_until=NULL WHERE id=$4"
                f" AND {NOT_ANOTHERS.format(5)}",
                error,
                ts(until),
                int(attempted),
                row.id,
                self.replica,
            )
            await db.execute(
                "UPDATE outbox SET state='queued', next_attempt_at=greatest(next_attempt_at, $1),"
                " claimed_by=NULL, lease_until=NULL WHERE receiver=$2 AND channel=$3"
                " AND channel_index=$4 AND id>$5 AND state IN ('queued','sending')"
                f" AND {NOT_ANOTHERS.format(6)}",
                ts(until),
                *row.destination,
                row.id,
                self.replica,
            )

    async def mark_dead(self, row: OutboxRow, error: str) -> None:
        """Give up on `row` (a dead letter), with why; not if another replica took it over
        (this one's lease ran out): that one sends it."""
        async with self._write() as db:
            await db.execute(
                "UPDATE outbox SET state='dead', last_error=$1, attempts=attempts+1,"
                f" lease_until=NULL WHERE id=$2 AND {NOT_ANOTHERS.format(3)}",
                error,
                row.id,
                self.replica,
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
        args: list[Any] = [error]
        if destinations is None:
            args.append(channels)
            where = " AND channel <> ALL($2::text[])"
        else:
            args += _keys(destinations)
            where = f" AND (receiver, channel, channel_index) NOT IN ({_destinations(2)})"
        if created_before is not None:
            args.append(ts(created_before))
            where += f" AND created_at<${len(args)}"
        async with self._write() as db:
            rows = await db.fetch(
                f"UPDATE outbox SET state='dead', last_error=$1 WHERE state='queued'{where}"
                " RETURNING receiver, channel, channel_index",
                *args,
            )
        return dict(Counter(Destination(*r) for r in rows))

    async def save_moved_chat(self, channel: str, old_id: str, new_id: str, now: datetime) -> None:
        """Remember that `channel`'s destination `old_id` is now `new_id` (replacing a move of
        the same id). Raises StoreError if it cannot be written."""
        async with self._write() as db:
            await db.execute(
                "INSERT INTO moved_chats VALUES ($1, $2, $3, $4) ON CONFLICT (channel, old_id)"
                " DO UPDATE SET new_id=EXCLUDED.new_id, moved_at=EXCLUDED.moved_at",
                channel,
                old_id,
                new_id,
                ts(now),
            )

    async def moved_chats(self) -> dict[str, dict[str, str]]:
        """Every move remembered: channel kind -> {old id: new id}."""
        moved: dict[str, dict[str, str]] = {}
        async with self._conn() as db:
            for channel, old_id, new_id in await db.fetch(
                "SELECT channel, old_id, new_id FROM moved_chats"
            ):
                moved.setdefault(channel, {})[old_id] = new_id
        return moved

    # ------------------------------------------------------------ reads

    async def check_writable(self) -> None:
        """Write (and roll back) a row: raises StoreError if the database cannot be written
        (unreachable, read-only, lock lost)."""
        with contextlib.suppress(_Rollback):
            async with self._write() as db:
                await db.execute("UPDATE planner SET watermark=watermark")
                raise _Rollback

    async def outbox_stats(self, now: datetime) -> tuple[int, float, int]:
        """(waiting notifications, age in seconds of the oldest waiting one, dead letters)."""
        async with self._conn() as db:
            waiting, oldest, dead = await db.fetchrow(
                "SELECT count(*) FILTER (WHERE state IN ('queued','sending')),"
                " min(created_at) FILTER (WHERE state IN ('queued','sending')),"
                " count(*) FILTER (WHERE state='dead') FROM outbox"
            )
        age = (now - datetime.fromisoformat(oldest)).total_seconds() if oldest else 0.0
        return int(waiting), max(0.0, age), int(dead)

    async def list_alerts(
        self, limit: int, after: str = "", status: str = "", receiver: str = ""
    ) -> list[dict[str, Any]]:
        """Up to `limit` alerts by fingerprint (as Alertmanager's API sorts them), after the
        fingerprint `after`; only those of `status` and routed to `receiver`, if given."""
        where, args = _where(
            ("fingerprint > {}", after),
            ("status = {}", status),
            ("receivers::jsonb ? {}", receiver),
        )
        async with self._conn() as db:
            rows = await db.fetch(
                f"SELECT * FROM alerts{where} ORDER BY fingerprint LIMIT ${len(args) + 1}",
                *args,
                limit,
            )
        return [alert_json(alert_from_row(tuple(r))) for r in rows]

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
            ("(opened_at < {0} OR (opened_at = {0} AND id < {1}))", opened_at, incident_id),
            ("status = {}", status),
            ("receiver = {}", receiver),
        )
        async with self._conn() as db, db.transaction(isolation="repeatable_read"):
            incidents = await db.fetch(
                f"SELECT * FROM incidents{where} ORDER BY opened_at DESC, id DESC"
                f" LIMIT ${len(args) + 1}",
                *args,
                limit,
            )
            outbox = await db.fetch(
                f"SELECT {NOTIFICATION_COLUMNS} FROM outbox WHERE incident_id=ANY($1::text[])"
                " ORDER BY id",
                [row[0] for row in incidents],
            )
        return incidents_json(incidents, outbox)

    async def prune(self, older_than: timedelta, now: datetime) -> int:
        """Forget resolved alerts, closed incidents and finished deliveries past retention.

        The planner's work: raises LeaseLost if this replica no longer holds the lease."""
        cutoff = ts(now - older_than)
        async with self._fenced() as (db, _):
            finished = [
                r[0]
                for r in await db.fetch(
                    "SELECT id FROM incidents WHERE status='resolved' AND resolved_at<$1"
                    " AND id NOT IN (SELECT incident_id FROM outbox"
                    " WHERE state NOT IN ('sent','dead') OR created_at>=$1)",
                    cutoff,
                )
            ]
            views = await db.fetch(
                "DELETE FROM outbox WHERE incident_id=ANY($1::text[]) RETURNING view_id", finished
            )
            await db.execute("DELETE FROM views WHERE id=ANY($1::bigint[])", [v[0] for v in views])
            await db.execute("DELETE FROM messages WHERE incident_id=ANY($1::text[])", finished)
            incidents = await db.execute("DELETE FROM incidents WHERE id=ANY($1::text[])", finished)
            alerts = await db.execute(
                "DELETE FROM alerts WHERE status='resolved' AND last_seen<$1", cutoff
            )
        self._ids.difference_update(finished)  # their ids may be handed out again
        return len(views) + _count(incidents) + _count(alerts)


class _Rollback(Exception):
    """Raised inside a transaction to roll it back."""


async def _write_plan(
    db: asyncpg.Connection, plan: Plan, now: datetime, epoch: int
) -> list[WrittenView]:
    """Write what `plan` changed (alerts, incidents, outbox rows queued at `now`, each with the
    lease `epoch` that planned it) in the caller's transaction (router/store/rows.py maps the
    rows, as for SQLite); the views written, for a ViewCache once it commits."""
    await db.executemany(UPSERT_ALERT, [alert_values(a) for a in plan.alerts.values()])
    await db.executemany(UPSERT_INCIDENT, [incident_values(i) for i in plan.incidents.values()])
    views = list({id(o.view): o.view for o in plan.outbox}.values())  # a shared view, once
    if not views:
        return []
    view_ids = await db.fetch(
        "INSERT INTO views (view) SELECT v FROM unnest($1::text[]) WITH ORDINALITY AS t(v, n)"
        " ORDER BY n RETURNING id",
        [v.model_dump_json() for v in views],
    )
    by_view = {
        id(v): int(r[0]) for v, r in zip(views, sorted(view_ids, key=lambda r: r[0]), strict=True)
    }
    marks = ", ".join(f"${n}" for n in range(1, OUTBOX_INSERT.count(",") + 3))
    await db.executemany(
        f"INSERT INTO outbox ({OUTBOX_INSERT}, epoch) VALUES ({marks})",
        [(*outbox_values(o, by_view[id(o.view)], now), epoch) for o in plan.outbox],
    )
    uses = Counter(id(o.view) for o in plan.outbox)
    return [(by_view[id(v)], v, uses[id(v)]) for v in views]


async def _move_watermark(db: asyncpg.Connection, watermark: int, epoch: int) -> None:
    """Set the watermark (with the lease epoch that moved it) and delete the inbox rows it
    passed (in the caller's transaction, with the plans of those rows)."""
    await db.execute("UPDATE planner SET watermark=$1, epoch=$2", watermark, epoch)
    await db.execute("DELETE FROM inbox WHERE id<=$1", watermark)


def _count(status: str) -> int:
    """The row count of a command status such as "DELETE 3"."""
    return int(status.rsplit(" ", 1)[-1])


def _where(*conditions: tuple[str, ...]) -> tuple[str, list[str]]:
    """(" WHERE a AND b", arguments) of the (clause, its arguments...) whose first argument is
    not empty; each clause's {} (or {0}, {1}) are its arguments, numbered $1, $2... in order."""
    clauses: list[str] = []
    args: list[str] = []
    for clause, *values in conditions:
        if not values[0]:
            continue
        marks = [f"${len(args) + n}" for n in range(1, len(values) + 1)]
        clauses.append(clause.format(*marks))
        args += values
    return (f" WHERE {' AND '.join(clauses)}" if clauses else ""), args
