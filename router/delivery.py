"""Outbox workers: ordered, rate-limited delivery per destination, with retries and dead letters.

One dispatcher claims due rows from the store and hands each to its destination's queue; one
worker per destination sends them in order, at most as fast as the service allows, so a slow or
dead channel never delays another. A row is marked sent only once its channel accepted it.
On `RetryLater` the row, and every later row of that destination, waits (the service's own
Retry-After, or exponential backoff with jitter); past `delivery.max_age` it is dead-lettered, as
is a `Failed` row at once. A destination with `storm_threshold` rows waiting gets one digest.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from router.channels.base import (
    AnyChannel,
    Delivered,
    Delivery,
    Digest,
    Failed,
    RetryLater,
)
from router.errors import StoreError
from router.logs import event, redact
from router.metrics import Metrics
from router.models import Reason
from router.state import Destination
from router.store import OutboxRow, Store

log = logging.getLogger("router.delivery")

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class DeliverySettings:
    """How the outbox retries and batches (from routes.yaml's `delivery`): dead-letter age,
    digest threshold, exponential backoff bounds, poll interval, claim sizes."""

    max_age: timedelta = timedelta(hours=1)
    storm_threshold: int = 10
    backoff_base: timedelta = timedelta(seconds=1)  # the first retry's wait, doubled each time
    backoff_max: timedelta = timedelta(minutes=5)
    poll: timedelta = timedelta(seconds=1)  # look for due rows this often without a wake-up
    claim_batch: int = 200
    max_in_memory: int = 400  # claimed rows held by workers: beyond this, leave them in the store
    unexpected_attempts: int = 3  # attempts that raised an unclassified error, then dead letter


@dataclass(frozen=True)
class Raised(Failed):
    """A render or send raised an exception no channel classified (reason: its type and text)."""


def _raised(exc: Exception) -> Raised:
    """What an exception from a channel counts as; logged with its traceback (a channel bug)."""
    log.exception("channel_error")
    return Raised(f"{type(exc).__name__}: {exc}")


class Outbox:
    """The outbox workers: one dispatcher claims due rows, one worker per destination sends
    them in order (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        channels: dict[Destination, AnyChannel],
        clock: Clock,
        settings: DeliverySettings = DeliverySettings(),
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
        wake: asyncio.Event | None = None,
        shared: bool = False,
    ) -> None:
        """`wake` is set by whoever queues rows (the planner) to have them claimed at once.

        `shared`: other replicas deliver from the same store (PostgreSQL), perhaps with another
        config (a rolling update): claim only the destinations this config has, and leave the
        others' rows to a replica that has them (see Reloader.equip_outbox for their end)."""
        self.shared = shared
        self.metrics = metrics or Metrics()
        self.store = store
        self.channels = channels
        self.clock = clock
        self.settings = settings
        self.rng = rng or random.Random()
        self.wake = wake or asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._queues: dict[Destination, list[OutboxRow]] = {}
        self._workers: dict[Destination, asyncio.Task[None]] = {}
        self._held_until: dict[Destination, datetime] = {}
        # Claimed rows dropped after a store error, the first of each destination: queued
        # again (store.defer, due now) once the store answers; see _give_back.
        self._given_back: dict[Destination, OutboxRow] = {}
        self._last_sent: dict[Destination, float] = {}
        self._stopping = False
        # Messages sent since rows were claimed: destination -> {incident id: ref}, kept while
        # the destination's worker runs (then another replica may work it: the store has them).
        self._refs: dict[Destination, dict[str, str]] = {}
        # Acceptances not yet written: one store call records those of many destinations, and
        # each destination's worker waits for its own before it sends the next (see _record).
        self._marks: list[tuple[OutboxRow, str, datetime, asyncio.Future[None]]] = []
        self._mark_task: asyncio.Task[None] | None = None
        self._retired: list[AnyChannel] = []  # replaced by a reload; closed at shutdown
        self._moves: dict[str, dict[str, str]] = {}  # kind -> {old id: new id}, see _moved
        self._moves_loaded = False
        for dest, channel in channels.items():
            self._bind(dest, channel)

    # ------------------------------------------------------------ dispatcher

    async def run(self) -> None:
        """Claim due rows and hand them to their destination's worker, until drain()."""
        while not self._stopping:  # also ends a run whose cancellation was lost (see below)
            if not self._moves_loaded:
                await self._load_moves()
            rows: list[OutboxRow] = []
            kinds = sorted({d.channel for d in self.channels})  # a reload may change them
            room = self.settings.max_in_memory - sum(len(q) for q in self._queues.values())
            dispatched = 0
            try:
                if self._given_back:
                    await self._return_claims()
                if kinds and room > 0:
                    limit = min(self.settings.claim_batch, room)
                    only = list(self.channels) if self.shared else None
                    rows = await self.store.claim_due(self.clock(), kinds, limit, only)
                for row in rows:
                    await self._dispatch(row)
                    dispatched += 1
            except StoreError as exc:
                # Locked or failing store: rows stay queued in it, and the claimed ones not
                # handed to a worker are given back; nothing is lost. Try again.
                event(log, logging.ERROR, "outbox_store_error", error=str(exc))
                self._give_back(rows[dispatched:])
                rows = []
            if not rows:
                self.wake.clear()
                # asyncio.timeout, not wait_for: Python 3.11's wait_for drops a cancellation
                # that comes as the wake-up does, and drain() then waited for this task forever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.poll.total_seconds()):
                        await self.wake.wait()

    def _give_back(self, rows: list[OutboxRow]) -> None:
        """Claimed rows no worker will send (a store error stopped them): remember the first
        of each destination, so that it and every later claimed row of its destination are
        queued again (by _return_claims) instead of staying claimed until a restart."""
        for row in rows:
            first = self._given_back.get(row.destination)
            if first is None or row.id < first.id:
                self._given_back[row.destination] = row

    async def _return_claims(self) -> None:
        """Queue the given-back rows again, due now (store.defer also queues the later rows of
        their destination). Raises StoreError if the store still fails (kept for next time)."""
        for dest, row in list(self._given_back.items()):
            await self.store.defer(
                row, "claim given back after a store error", self.clock(), attempted=False
            )
            del self._given_back[dest]

    async def _dispatch(self, row: OutboxRow) -> None:
        dest = row.destination
        if dest in self._given_back:  # an earlier row of it waits to be queued again: so does
            return  # this one (the same store.defer queues it, being later)
        if row.taken_over:
            self.metrics.takeovers.labels(dest.receiver, dest.channel).inc()
            event(
                log,
                logging.WARNING,
                "claim_taken_over",
                destination=str(dest),
                incident=row.incident_id,
                correlation_id=row.correlation_id,
            )
        if dest not in self.channels:
            await self._dead(row, f"no {dest} in the loaded config (receiver or channel removed)")
            return
        held = self._held_until.get(dest)
        if held is not None and held > self.clock():
            await self.store.defer(
                row,
                "waiting: an earlier notification to this destination is retrying",
                held,
                attempted=False,
            )
            return
        self._queues.setdefault(dest, []).append(row)
        if dest not in self._workers:
            self._workers[dest] = asyncio.create_task(self._worker(dest), name=f"deliver {dest}")

    def replace_channels(self, channels: dict[Destination, AnyChannel]) -> None:
        """A reloaded config's channels: used for what is dispatched from now on; a delivery in
        flight finishes with the channel it started with."""
        self._retired += [c for c in self.channels.values() if c not in channels.values()]
        self.channels = channels
        for dest, channel in channels.items():
            self._bind(dest, channel)
            self._warn_if_moved(dest, channel)

    # ------------------------------------------------------------ moved destinations

    def _bind(self, dest: Destination, channel: AnyChannel) -> None:
        channel.moves = self._moves.setdefault(dest.channel, {})
        channel.on_moved = functools.partial(self._moved, dest)

    async def _load_moves(self) -> None:
        """The moves a previous run saw (Telegram chat migrations), shared with the channels."""
        try:
            stored = await self.store.moved_chats()
        except StoreError as exc:
            event(log, logging.ERROR, "outbox_store_error", error=str(exc))
            return
        for kind, moves in stored.items():
            self._moves.setdefault(kind, {}).update(moves)
        self._moves_loaded = True
        for dest, channel in self.channels.items():  # bound to these dicts already (_bind)
            self._warn_if_moved(dest, channel)

    def _warn_if_moved(self, dest: Destination, channel: AnyChannel) -> None:
        configured = str(getattr(channel.config, "chat_id", ""))
        if configured in channel.moves:
            self._warn_moved(dest, configured, channel.moves[configured])

    def _warn_moved(self, dest: Destination, old: str, new: str) -> None:
        event(
            log,
            logging.WARNING,
            "destination_moved",
            destination=str(dest),
            old_id=old,
            new_id=new,
            action=f"sending to {new}; update chat_id in the config to {new}",
        )

    async def _moved(self, dest: Destination, old: str, new: str) -> None:
        """A channel was told its destination moved (Telegram ChatMigrated): keep it, loudly."""
        self._moves.setdefault(dest.channel, {})[old] = new
        self._warn_moved(dest, old, new)
        try:
            await self.store.save_moved_chat(dest.channel, old, new, self.clock())
        except StoreError as exc:  # kept in memory: followed until the next start anyway
            event(log, logging.ERROR, "outbox_store_error", error=str(exc))

    async def drain(self, grace: timedelta) -> None:
        """Stop taking work; let deliveries in flight finish for up to `grace`; keep the rest
        queued in the store."""
        grace_s = grace.total_seconds()
        self._stopping = True
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        workers = list(self._workers.values())
        if workers:
            _, pending = await asyncio.wait(workers, timeout=grace_s)
            event(
                log,
                logging.INFO,
                "outbox_drained",
                finished=len(workers) - len(pending),
                cut_short=len(pending),
            )
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._marks or (self._mark_task is not None and not self._mark_task.done()):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_marks(), max(grace_s, 2.0))
        for channel in [*self.channels.values(), *self._retired]:
            await channel.aclose()

    async def _flush_marks(self) -> None:
        if self._mark_task is not None:
            await asyncio.shield(self._mark_task)
        if self._marks:
            await self._write_marks()

    # ------------------------------------------------------------ one destination

    async def _worker(self, dest: Destination) -> None:
        channel = self.channels[dest]
        queue = self._queues[dest]
        current: list[OutboxRow] = []  # being delivered
        try:
            while queue and not self._stopping:
                await self._pace(dest, channel)
                if channel.storm_guard and len(queue) >= self.settings.storm_threshold:
                    current = queue[:]
                    queue.clear()
                    await self._deliver_digest(dest, channel, current)
                    continue
                current = [queue.pop(0)]
                if not await self._deliver(dest, channel, current[0]):
                    queue.clear()  # the store holds them until the destination is free again
        except StoreError as exc:
            event(log, logging.ERROR, "outbox_store_error", destination=str(dest), error=str(exc))
            self._give_back([*current, *queue])  # queued again once the store answers
            queue.clear()
        finally:
            self._workers.pop(dest, None)
            self.wake.set()  # room for more claimed rows
            if queue and not self._stopping:  # rows that arrived while we were finishing
                self._workers[dest] = asyncio.create_task(
                    self._worker(dest), name=f"deliver {dest}"
                )
            else:  # idle: the next worker reads refs from the store (another replica's too)
                self._refs.pop(dest, None)

    async def _pace(self, dest: Destination, channel: AnyChannel) -> None:
        """Wait until the destination's interval has passed since its last send finished."""
        last = self._last_sent.get(dest)
        if last is not None:
            wait = channel.min_interval().total_seconds() - (
                asyncio.get_running_loop().time() - last
            )
            if wait > 0:
                await asyncio.sleep(wait)

    def _sent_now(self, dest: Destination) -> None:
        self._last_sent[dest] = asyncio.get_running_loop().time()

    async def _deliver(self, dest: Destination, channel: AnyChannel, row: OutboxRow) -> bool:
        """Send one row; False if the destination must wait before anything else is sent.

        A Failed answer (or an exception) to the rendered message is followed at once by one try
        with the built-in plain text; if that fails too, the row is dead-lettered with both
        reasons, unless an exception was raised: that is retried, `unexpected_attempts` times
        in all, then dead-lettered (an unknown error may be transient, or may come every time).
        """
        ref = self._refs.get(dest, {}).get(row.incident_id) or row.ref
        if ref is None and row.view.reason is not Reason.FIRST:
            ref = await self.store.message_ref(row)  # sent after this row was claimed, cache pruned
        result = await self._attempt(dest, channel, row, ref, plain=False)
        if isinstance(result, Failed):
            plain = await self._attempt(dest, channel, row, ref, plain=True)
            event(
                log,
                logging.WARNING,
                "plain_text_fallback",
                destination=str(dest),
                incident=row.incident_id,
                refused=result.reason,
                result=type(plain).__name__,
            )
            if isinstance(plain, Failed):
                reason = f"{result.reason}; as plain text: {plain.reason}"
                if (
                    isinstance(plain, Raised)
                    and row.attempts + 1 < self.settings.unexpected_attempts
                ):
                    plain = RetryLater(None, reason)
                else:
                    plain = Failed(reason)
            result = plain
        self._sent_now(dest)
        return await self._record(dest, row, result)

    async def _attempt(
        self,
        dest: Destination,
        channel: AnyChannel,
        row: OutboxRow,
        ref: str | None,
        *,
        plain: bool,
    ) -> Delivery:
        """Render and send (or edit) once; what any step raised comes back as `Raised`."""
        try:
            msg = channel.render_plain(row.view) if plain else channel.render(row.view)
            if msg.template_error:
                event(
                    log,
                    logging.ERROR,
                    "template_failed",
                    destination=str(dest),
                    incident=row.incident_id,
                    error=msg.template_error,
                )
            return await (channel.update(msg, ref) if ref else channel.send(msg))
        except Exception as exc:  # a channel bug or an unclassified error must not stop delivery
            return _raised(exc)

    async def _deliver_digest(
        self, dest: Destination, channel: AnyChannel, rows: list[OutboxRow]
    ) -> None:
        """Send the rows as digests, one message each, paced like any message; every incident is
        named in one of them. A digest's rows are marked sent when it is accepted. If one is
        refused for good (or raises), the rows not sent yet go one by one, each with its own
        plain-text fallback; on RetryLater the first of them waits and the rest follow it."""
        left = list(rows)
        try:
            digests: list[Digest] = channel.render_digests([r.view for r in rows])
        except Exception:
            log.exception("channel_error")
            digests = []
            await self._deliver_each(dest, channel, left)
        for n, digest in enumerate(digests):
            if n:
                await self._pace(dest, channel)
            try:
                result: Delivery = await channel.send_digest(digest)
            except Exception as exc:
                result = _raised(exc)
            self._sent_now(dest)
            ids = {v.id for v in digest.views}
            covered = [r for r in rows if r.view.id in ids]
            event(
                log,
                logging.WARNING,
                "storm_digest",
                destination=str(dest),
                notifications=len(covered),
                part=n + 1,
                parts=len(digests),
                result=type(result).__name__,
            )
            if isinstance(result, Failed):
                await self._deliver_each(dest, channel, left)
                return
            if isinstance(result, RetryLater):
                await self._record(dest, min(left, key=lambda r: r.id), result)  # it leads
                return
            self.metrics.digests.labels(dest.receiver, dest.channel).inc()
            for row in covered:  # written together: waiting for the last waits for them all
                await self._record(dest, row, Delivered(""), settle=row is covered[-1])
            left = [r for r in left if r.view.id not in ids]

    async def _deliver_each(
        self, dest: Destination, channel: AnyChannel, rows: list[OutboxRow]
    ) -> None:
        """Deliver `rows` one at a time, paced, until one must wait (the rest follow it)."""
        for row in rows:
            await self._pace(dest, channel)
            if not await self._deliver(dest, channel, row):
                return

    async def _record(
        self, dest: Destination, row: OutboxRow, result: Delivery, settle: bool = True
    ) -> bool:
        """Record what the channel answered; False if the destination must wait (retry).

        An acceptance is written before this returns (unless `settle` is False), so that the
        destination's next row is sent only once this one is recorded: a crash (SIGKILL) sends
        at most one notification per destination again after the restart.
        """
        now = self.clock()
        if isinstance(result, RetryLater | Failed):  # stored and served by the API: no secrets
            result = replace(result, reason=redact(result.reason))
        if isinstance(result, Delivered):
            recorded = asyncio.get_running_loop().create_future()
            self._marks.append((row, result.ref, now, recorded))
            if self._mark_task is None or self._mark_task.done():
                self._mark_task = asyncio.create_task(self._write_marks(), name="outbox marks")
            if result.ref:
                refs = self._refs.setdefault(dest, {})
                if len(refs) > 50_000:
                    refs.clear()
                refs[row.incident_id] = result.ref
            self.metrics.sent.labels(dest.receiver, dest.channel).inc()
            latency = max(0.0, (now - row.created_at).total_seconds())
            self.metrics.latency.labels(dest.channel).observe(latency)
            self._held_until.pop(dest, None)
            event(
                log,
                logging.INFO,
                "notification_sent",
                destination=str(dest),
                incident=row.incident_id,
                reason=row.view.reason.value,
                attempt=row.attempts + 1,
                correlation_id=row.correlation_id,
            )
            if settle:
                await asyncio.shield(recorded)  # a cancelled worker leaves the write to drain()
            return True
        if isinstance(result, Failed):
            await self._dead(row, result.reason)
            return True
        wait: timedelta | None = result.after
        if wait is None:
            wait = min(self.settings.backoff_max, self.settings.backoff_base * 2**row.attempts)
            wait *= self.rng.uniform(0.5, 1.0)
        until = now + wait
        if until - row.created_at > self.settings.max_age:
            await self._dead(
                row, f"gave up after {self.settings.max_age} (last error: {result.reason})"
            )
            return True
        await self.store.defer(row, result.reason, until)
        self._held_until[dest] = until
        self.metrics.retried.labels(dest.receiver, dest.channel).inc()
        event(
            log,
            logging.WARNING,
            "notification_retry",
            destination=str(dest),
            incident=row.incident_id,
            error=result.reason,
            retry_in_s=round(wait.total_seconds(), 3),
            attempt=row.attempts + 1,
            correlation_id=row.correlation_id,
        )
        asyncio.get_running_loop().call_later(wait.total_seconds(), self.wake.set)
        return False

    async def _write_marks(self) -> None:
        """Record acceptances in batches; if the store fails, keep them and try again."""
        while self._marks:
            batch, self._marks = self._marks, []
            try:
                await self.store.mark_sent_many([(row, ref, now) for row, ref, now, _ in batch])
            except StoreError as exc:
                event(
                    log, logging.ERROR, "outbox_store_error", error=str(exc), unrecorded=len(batch)
                )
                self._marks[:0] = batch
                await asyncio.sleep(1.0)
                continue
            for *_, recorded in batch:
                if not recorded.done():
                    recorded.set_result(None)

    async def _dead(self, row: OutboxRow, reason: str) -> None:
        await self.store.mark_dead(row, reason)
        self.metrics.dead.labels(row.destination.receiver, row.destination.channel).inc()
        event(
            log,
            logging.ERROR,
            "notification_dead",
            receiver=row.destination.receiver,
            channel=row.destination.channel,
            incident=row.incident_id,
            error=reason,
            correlation_id=row.correlation_id,
        )
