"""The store: what alert-router keeps (inbox, alerts, incidents, outbox), behind one interface.

`Store` is all that the rest of the router may call; `router.store.sqlite.SqliteStore` (one
file, one writer thread; the default) and `router.store.postgres.PostgresStore` (a PostgreSQL
database, issue 17) are its engines; `router.store.engines.store_for()` picks the one the
`storage` section names (`url` set: PostgreSQL; else SQLite at `path`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import orjson

from router.models import IncidentView, WebhookPayload
from router.state import Destination, IncidentState, Plan, State

# Short incident ids people type on a phone: no 0/o, 1/l/i look-alikes.
ID_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
ID_LENGTH = 5


@dataclass(frozen=True)
class InboxRow:
    """A payload accepted (answered 200) and not planned yet: `id` orders the inbox."""

    id: int
    body: bytes
    correlation_id: str
    received_at: datetime

    def payload(self) -> WebhookPayload:
        """The body parsed again (after a restart, or past the planner's PARSED_BYTES) as intake
        parsed it: orjson, then the model, so that every body answered 200 reads back (pydantic's
        own JSON parser stops at 200 levels of nesting, orjson at 1,024). Raises
        orjson.JSONDecodeError or pydantic.ValidationError."""
        return WebhookPayload.model_validate(orjson.loads(self.body))


def unused_id(taken: set[str]) -> str:
    """A short incident id (ID_LENGTH characters of ID_ALPHABET) not in `taken`; added to it."""
    base = len(ID_ALPHABET)
    while True:
        n = secrets.randbelow(base**ID_LENGTH)  # one read of the OS's random source, not one each
        digits = []
        for _ in range(ID_LENGTH):
            n, digit = divmod(n, base)
            digits.append(ID_ALPHABET[digit])
        candidate = "".join(digits)
        if candidate not in taken:
            taken.add(candidate)
            return candidate


MessageKey = tuple[str, Destination]  # (incident id, destination): one message each


@dataclass(frozen=True)
class OutboxRow:
    """One notification claimed for delivery: the incident's view for one destination.

    `ref` is the message to edit, as the store knew it when the row was claimed; `taken_over`
    says the row was claimed before by a replica whose lease ran out (PostgreSQL)."""

    id: int
    incident_id: str
    destination: Destination
    view: IncidentView
    correlation_id: str
    created_at: datetime
    attempts: int
    ref: str | None = None
    taken_over: bool = False

    @property
    def message_key(self) -> MessageKey:
        """Which message this row concerns: one per incident and destination."""
        return (self.incident_id, self.destination)


@dataclass(frozen=True)
class QueuedCommand:
    """An /ack or /unack that a replica took and committed for the planner to apply (a row of
    PostgreSQL's `commands`); `id` orders them. `actor` holds router.chatops.commands.Actor's
    fields; `duration` is the silence asked for (None: the default); `silence_id` the silence
    an earlier attempt to apply it created (a planner that died before its commit)."""

    id: int
    name: str  # "ack" | "unack"
    incident_id: str
    actor: dict[str, str]
    duration: timedelta | None
    comment: str
    created_at: datetime
    silence_id: str = ""


class CommandQueue(Protocol):
    """Chat commands taken by any replica and applied by the planner, exactly once: the answer
    of each is written with the plan it made, in one transaction (PostgreSQL only; on SQLite
    the one process plans and applies a command at once)."""

    async def submit_command(
        self,
        name: str,
        incident_id: str,
        actor: dict[str, str],
        duration: timedelta | None,
        comment: str,
        now: datetime,
    ) -> int:
        """Commit a command for the planner; its id. Raises StoreError if it did not commit."""

    async def pending_commands(self, limit: int) -> list[QueuedCommand]:
        """Up to `limit` commands without an answer yet, oldest first."""

    async def wait_commands(self, at_most: timedelta) -> None:
        """Return once a replica may have queued a command since the last return, or after
        `at_most`, whichever is first."""

    async def note_silence(self, command_id: int, silence_id: str) -> None:
        """Remember the silence made for a command before its ack commits (made once)."""

    async def command_result(self, command_id: int) -> str | None:
        """The answer the planner wrote for the command; None while it waits."""

    async def first_update(self, update_id: int, keep: timedelta) -> bool:
        """Record a Telegram webhook update's id; False if a replica recorded it already (sent
        again). Ids recorded longer than `keep` ago are forgotten. Raises StoreError if it did
        not commit."""

    async def finish_command(
        self, command_id: int, result: str, now: datetime, plan: Plan | None = None
    ) -> bool:
        """Write the command's answer and, if given, the plan it made (at `now`), in one
        transaction, unless the command has an answer already (then nothing is written: False).

        Raises StoreError if it did not commit, StoreRefused if the database refuses the plan."""


class Store(Protocol):
    """What the router asks of its storage. Every method raises StoreError when the engine
    fails (the caller retries, answers 503, or reports not ready); none blocks the event loop.
    """

    path: str
    replica: str  # this process among the replicas of one database (router.roles.replica_name)

    # lifecycle and health
    async def open(self) -> None:
        """Take the store (one router per store), create or upgrade its schema."""

    async def aclose(self) -> None:
        """Let the store go; what is committed stays."""

    def files_lost(self) -> list[str]:
        """Why the store's files are no longer the ones opened; empty while they are."""

    def problem(self) -> str | None:
        """Why a payload cannot be accepted now (lost file, failed commit); None if it can."""

    async def check_writable(self) -> None:
        """Take the write lock and let it go."""

    # intake and planning
    @property
    def last_inbox_id(self) -> int:
        """The id of the last payload committed to the inbox."""

    async def accept(self, body: bytes, received_at: datetime, correlation_id: str) -> int:
        """Commit one payload to the inbox; its id once durable (group commit)."""

    async def inbox_after(self, watermark: int, limit: int) -> list[InboxRow]:
        """Up to `limit` inbox rows past `watermark`, oldest first."""

    async def load_state(self) -> tuple[State, int]:
        """The firing alerts and open incidents, and the watermark, as committed."""

    def new_incident_id(self) -> str:
        """A short id no incident has (nor one handed out since the store opened)."""

    async def commit_plans(self, plans: list[tuple[Plan, datetime]], watermark: int | None) -> None:
        """Write the plans (each with the time it was made) and, unless None, move the
        watermark, in one transaction; the inbox rows it passes are deleted."""

    async def set_aside(self, row: InboxRow, error: str) -> None:
        """Keep a payload that cannot be planned, with why, and move the watermark past it."""

    async def watermark(self) -> int:
        """The id of the last payload planned, as committed."""

    def watch_inbox(self, grew: Callable[[], None]) -> None:
        """Have `grew()` called when another replica commits to the inbox (PostgreSQL)."""

    # the planner lease (router/roles.py); plan transactions raise LeaseLost without it
    async def take_lease(self, ttl: timedelta) -> int:
        """Take or renew the planner lease for `ttl`; its epoch, or 0 if another holds it."""

    def drop_lease(self) -> None:
        """Forget the lease held: the next take_lease() takes it anew."""

    async def pending_alerts(self, correlation_id: str) -> int | None:
        """How many alerts a payload waiting in the inbox has; None if it is not waiting."""

    # delivery
    async def claim_due(
        self,
        now: datetime,
        channels: list[str],
        limit: int,
        destinations: list[Destination] | None = None,
    ) -> list[OutboxRow]:
        """Mark up to `limit` due rows of these channel kinds as being sent; oldest first.
        Only rows of `destinations` if given (a replica claims what its config can send)."""

    async def mark_sent_many(self, sent: list[tuple[OutboxRow, str, datetime]]) -> None:
        """Record (row, message ref, when) acceptances by the channels, in one transaction."""

    async def defer(
        self, row: OutboxRow, error: str, until: datetime, *, attempted: bool = True
    ) -> None:
        """Retry `row` at `until`, and hold every later row of its destination until then."""

    async def mark_dead(self, row: OutboxRow, error: str) -> None:
        """Give up on `row` (a dead letter), with why."""

    async def mark_dead_unless(
        self,
        channels: list[str],
        error: str,
        *,
        destinations: list[Destination] | None = None,
        created_before: datetime | None = None,
    ) -> dict[Destination, int]:
        """Give up on every queued row of a channel kind not in `channels` (its kind removed
        from the config: nothing would ever claim it), with why; how many per destination.
        With `destinations`, on every queued row of a destination not in it instead; with
        `created_before`, only on rows queued before then."""

    async def message_ref(self, row: OutboxRow) -> str | None:
        """The message sent for the row's incident and destination, if any."""

    async def save_moved_chat(self, channel: str, old_id: str, new_id: str, now: datetime) -> None:
        """Remember that `channel`'s destination `old_id` is now `new_id`."""

    async def moved_chats(self) -> dict[str, dict[str, str]]:
        """Every move remembered: channel kind -> {old id: new id}."""

    # reads
    async def incident(self, incident_id: str) -> IncidentState | None:
        """The incident with this id as stored; None if unknown."""

    async def incident_for_message(self, channel: str, ref: str) -> str | None:
        """The id of the incident whose message on `channel` is `ref`; None if none is."""

    async def outbox_stats(self, now: datetime) -> tuple[int, float, int]:
        """(waiting notifications, age in seconds of the oldest waiting one, dead letters)."""

    async def list_alerts(
        self, limit: int, after: str = "", status: str = "", receiver: str = ""
    ) -> list[dict[str, Any]]:
        """Up to `limit` alerts by fingerprint after `after`, as GET /api/v1/alerts shows them."""

    async def list_incidents(
        self,
        limit: int,
        before: tuple[str, str] | None = None,
        status: str = "",
        receiver: str = "",
    ) -> list[dict[str, Any]]:
        """Up to `limit` incidents newest first, as GET /api/v1/incidents shows them."""

    async def prune(self, older_than: timedelta, now: datetime) -> int:
        """Forget resolved alerts, closed incidents and finished deliveries past retention."""
